import os
import pickle

import pytest
import torch

from ncbench._errors import CheckpointError
from ncbench.models import load_checkpoint, model_checksum

MARKER_ENV = "NCBENCH_TEST_MARKER"


class _Exploit:
    """Unpickling this calls os.system, which would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_round_trip_safetensors(digits_model, digits_checkpoint, digits):
    loaded = load_checkpoint(digits_checkpoint)
    assert model_checksum(loaded) == model_checksum(digits_model)
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test[:32]), digits_model(digits.x_test[:32]))


def test_round_trip_weights_only_pt(digits_model, tmp_path, digits):
    path = tmp_path / "m.pt"
    torch.save({"spec": digits_model.spec.to_dict(), "state_dict": digits_model.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert model_checksum(loaded) == model_checksum(digits_model)


def test_pickled_object_is_refused_without_running_it(tmp_path, digits_model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"spec": digits_model.spec.to_dict(), "state_dict": {}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="refused: the file holds pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()
    # the same payload as a bare pickle file with a .pt name
    raw = tmp_path / "evil2.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_missing_corrupt_and_foreign_files(tmp_path, digits_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(digits_checkpoint.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint|refused"):
        load_checkpoint(junk)
    other = tmp_path / "w.ckpt"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_checkpoint(other)
    plain = tmp_path / "plain.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, plain)
    with pytest.raises(CheckpointError, match="expected a dict with 'spec' and 'state_dict'"):
        load_checkpoint(plain)


def test_weights_that_do_not_fit_the_architecture(tmp_path, digits_model):
    spec = dict(digits_model.spec.to_dict(), args={"width": 32, "depth": 2})
    path = tmp_path / "mismatch.pt"
    torch.save({"spec": spec, "state_dict": digits_model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="weights do not fit architecture 'mlp'"):
        load_checkpoint(path)


def test_torch_export_archive_needs_trust_and_recovers_fc(tmp_path, digits_model, digits):
    from torch import nn

    class Both(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            f = self.m.features(x)
            return f, self.m.fc(f)

    path = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(Both(digits_model).eval(), (digits.x_test[:4],), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    with pytest.raises(CheckpointError, match="refused: torch.export archives unpickle"):
        load_checkpoint(path)
    loaded = load_checkpoint(path, trust=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded(digits.x_test[:32]), digits_model(digits.x_test[:32]))
        torch.testing.assert_close(loaded.fc(loaded.features(digits.x_test[:8])), digits_model(digits.x_test[:8]),
                                   rtol=1e-4, atol=1e-4)
    assert loaded.spec.num_classes == 10 and loaded.spec.input_shape == (1, 8, 8)
    # the model's parameters are the program's: counted and frozen as such (the fitted fc is derived)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in digits_model.parameters())
    # the same weights in another computation are another model
    from ncbench.models import model_checksum

    class Doubled(Both):
        def forward(self, x):
            f, z = super().forward(x)
            return f, 2 * z

    other = tmp_path / "doubled.pt2"
    torch.export.save(torch.export.export(Doubled(digits_model).eval(), (digits.x_test[:4],),
                                          dynamic_shapes=({0: batch},)), str(other))
    assert model_checksum(load_checkpoint(other, trust=True)) != model_checksum(loaded)


# ------------------------------------------------------------------------- DataParallel prefix, clear refusals

def _prefixed(state, prefix="module."):
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_dataparallel_prefix_is_stripped_and_said(tmp_path, digits_model, digits, fmt):
    """A state dict saved from nn.DataParallel (every name starts with 'module.') loads, gives the same model,
    and the model's load_note says what was done; a clean checkpoint has no note."""
    from torch import nn

    wrapped = nn.DataParallel(digits_model)
    state = wrapped.state_dict()
    assert all(k.startswith("module.") for k in state)
    path = tmp_path / f"dp.{fmt}"
    if fmt == "pt":
        torch.save({"spec": digits_model.spec.to_dict(), "state_dict": state}, path)
    else:
        import json

        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path),
                  metadata={"ncbench_spec": json.dumps(digits_model.spec.to_dict())})
    loaded = load_checkpoint(path)
    assert model_checksum(loaded) == model_checksum(digits_model)
    with torch.no_grad():
        assert torch.equal(loaded(digits.x_test[:16]), digits_model(digits.x_test[:16]))
    assert loaded.load_note is not None and "stripped DataParallel's 'module.' prefix" in loaded.load_note


def test_clean_checkpoint_has_no_load_note(digits_checkpoint):
    assert load_checkpoint(digits_checkpoint).load_note is None


def test_a_prefix_on_only_some_names_is_refused(tmp_path, digits_model):
    state = dict(digits_model.state_dict())
    first = next(iter(state))
    state["module." + first] = state.pop(first)
    path = tmp_path / "mixed.pt"
    torch.save({"spec": digits_model.spec.to_dict(), "state_dict": state}, path)
    with pytest.raises(CheckpointError, match=r"mixed.pt: weights do not fit architecture 'mlp'"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"spec": digits_model.spec.to_dict(), "state_dict": _prefixed(digits_model.state_dict(), "model.")},
               other)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(other)


def test_pickled_pt_is_refused_in_one_plain_line_naming_the_file(tmp_path, digits_model):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"spec": digits_model.spec.to_dict(), "state_dict": {}, "payload": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg and "\x1b" not in msg
    assert "GLOBAL posix.system" in msg or "GLOBAL os.system" in msg or "GLOBAL nt.system" in msg
    assert "In PyTorch 2.6" not in msg  # torch's advice about torch.load is not ours to give
    assert msg.endswith("(ncbench.models.save_checkpoint writes the former)")  # whole, not cut off
    assert not marker.exists()


def test_torch_error_text_is_cleaned_not_cut_mid_word(tmp_path, monkeypatch, digits_model):
    """torch's refusal with terminal colour codes and a long tail: one plain line, words kept whole."""
    from ncbench import models as M

    noisy = ("Weights only load failed. In PyTorch 2.6, we changed the default. Do it only if you got the file from a "
             "trusted source.\n\n\x1b[1mTrying to load unsupported GLOBAL evil.payload\x1b[0m whose module evil is "
             "blocked and " + "additionally " * 30 + "\n\nCheck the documentation of torch.load to learn more")
    monkeypatch.setattr(M.torch, "load", lambda *a, **k: (_ for _ in ()).throw(pickle.UnpicklingError(noisy)))
    path = tmp_path / "noisy.pt"
    path.write_bytes(b"x")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "\x1b" not in msg and "\n" not in msg and str(path) in msg
    assert "Trying to load unsupported GLOBAL evil.payload whose module evil is blocked" in msg
    detail = msg.split("torch's weights-only loader: ")[1].split(")")[0]
    source_words = set(M._ANSI.sub("", noisy).split())
    assert all(w in source_words or w == "..." for w in detail.split())


@pytest.mark.parametrize("spec,message", [
    ({}, r"the architecture spec is empty; expected keys arch, num_classes, input_shape"),
    ({"arch": "mlp"}, r"malformed architecture spec \(missing \['num_classes', 'input_shape'\]\)"),
    ({"arch": "mlp", "num_classes": 10, "input_shape": [1, 8, 8], "colour": 1}, r"unknown \['colour'\]"),
    ({"arch": "mlp", "num_classes": "ten", "input_shape": [1, 8, 8]}, r"malformed architecture spec \(.*ten.*\)"),
    ("mlp", r"the architecture spec must be a mapping; got str"),
])
def test_empty_or_malformed_spec_names_the_file(tmp_path, digits_model, spec, message):
    path = tmp_path / "bad-spec.pt"
    torch.save({"spec": spec, "state_dict": digits_model.state_dict()}, path)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
