"""Models: build a registered architecture, wrap one of your own, and save and load checkpoints.

Every model is a classifier that exposes ``features(x)`` and a final ``fc: nn.Linear``; it takes inputs in
[0, 1], normalises them inside (with the dataset's declared mean and std), and computes
``logits = fc(features(x))``. Weights are saved as safetensors with the architecture spec in the file's
metadata, and loaded without unpickling anything. The classifier, its spec and the registry live in
:mod:`ncbench._classifier`, the architectures in :mod:`ncbench._archs`; this module re-exports them.

>>> m = create_model("mlp", input_shape=(1, 8, 8), num_classes=10, width=32, depth=2)
>>> m.features(torch.zeros(4, 1, 8, 8)).shape, m.fc.out_features
(torch.Size([4, 32]), 10)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from . import _archs  # noqa: F401  (registers the architectures)
from ._classifier import MODELS, Classifier, ModelSpec, Normalize, register_model
from ._errors import CheckpointError, InputError
from ._io import write_replace

__all__ = ["MODELS", "Classifier", "ExportedClassifier", "ModelSpec", "Normalize", "create_model", "list_models",
           "load_checkpoint", "model_checksum", "register_model", "save_checkpoint", "wrap_classifier"]

SPEC_KEY = "ncbench_spec"
#: metadata key of how ncbench trained the weights: {job_id, recipe, seed, dataset} (JSON)
TRAINING_KEY = "ncbench_training"


def list_models(pattern: str = "*") -> list[str]:
    return MODELS.names(pattern)


def create_model(name: str, *, input_shape, num_classes: int, mean=(0.0,), std=(1.0,), **args) -> Classifier:
    """Build architecture ``name`` for inputs of ``input_shape`` (without batch) and C classes.

    ``name`` is a registered name (:func:`list_models`), or ``tv:<name>`` for a torchvision model
    (``torchvision.models.get_model``; e.g. ``weights="DEFAULT"`` downloads its weights) or ``timm:<name>`` for a
    timm model; their final ``nn.Linear`` becomes ``fc`` and everything before it ``features``.
    """
    if ":" in name:
        model = _external(name, tuple(input_shape), int(num_classes), tuple(mean), tuple(std), dict(args))
        model.spec = ModelSpec(name, int(num_classes), tuple(int(v) for v in input_shape),
                               tuple(float(v) for v in mean), tuple(float(v) for v in std), dict(args))
        return model
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    allowed = [p for p in params if params[p].kind == inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        raise InputError(f"model {name!r} takes no argument(s) {unknown}; its arguments are {allowed}")
    model = factory(tuple(input_shape), int(num_classes), tuple(mean), tuple(std), **args)
    model.spec = ModelSpec(name, int(num_classes), tuple(int(v) for v in input_shape),
                           tuple(float(v) for v in mean), tuple(float(v) for v in std), dict(args))
    return model


def _external(name, input_shape, num_classes, mean, std, args) -> Classifier:
    src, _, arch = name.partition(":")
    if src == "tv":
        import torchvision.models as tvm

        if arch not in tvm.list_models():
            close = __import__("difflib").get_close_matches(arch, tvm.list_models(), n=3)
            raise InputError(f"torchvision has no model {arch!r}" + (f"; did you mean {close}?" if close else ""))
        if args.get("weights") is None:
            args = {**args, "num_classes": num_classes}
        net = tvm.get_model(arch, **args)
    elif src == "timm":
        try:
            import timm
        except ImportError:
            raise InputError(f"model {name!r} needs timm, which is not installed (pip install timm)") from None
        net = timm.create_model(arch, num_classes=num_classes, **args)
    else:
        raise InputError(f"unknown model source {src!r} in {name!r}; use tv:<name> (torchvision) or timm:<name>")
    return wrap_classifier(net, input_shape, num_classes, mean, std, name=name)


def wrap_classifier(net: nn.Module, input_shape, num_classes: int, mean=(0.0,), std=(1.0,), *,
                    name: str = "model") -> Classifier:
    """Split ``net`` at its final ``nn.Linear``: that layer becomes ``fc``, the rest (with the layer replaced by
    an identity) computes the features. Refuses a network whose output is not produced by that layer, and one
    with the wrong number of classes."""
    linears = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise InputError(f"{name} has no nn.Linear layer: ncbench needs a final linear classifier to measure "
                         "collapse (features are its input)")
    lin_name, lin = linears[-1]
    if lin.out_features != num_classes:
        raise InputError(f"{name}'s final nn.Linear ({lin_name}) has {lin.out_features} outputs but the dataset "
                         f"has {num_classes} classes")
    seen = {}
    handle = lin.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, *input_shape))
    handle.remove()
    if "out" not in seen or not torch.equal(seen["out"], out):
        raise InputError(f"{name}'s output is not produced by its last nn.Linear ({lin_name}); ncbench needs "
                         "logits = Linear(features)")
    parent = net.get_submodule(lin_name.rpartition(".")[0]) if "." in lin_name else net
    setattr(parent, lin_name.rpartition(".")[2], nn.Identity())
    model = Classifier(net, lin.in_features, num_classes, mean, std)
    model.fc.load_state_dict(lin.state_dict())
    return model.train()


# ----------------------------------------------------------------------------------------------- checkpoints

def model_checksum(model) -> str:
    """sha256 over the state dict's names, dtypes, shapes and bytes, in name order.

    ``model``: a module, or a state dict itself (e.g. a model's initial weights). For a ``torch.export``
    program, over the program's own weights (its fitted ``fc`` is derived from them).
    """
    h = hashlib.sha256()
    if isinstance(model, dict):
        state = model
    else:
        state = model.checksum_state() if hasattr(model, "checksum_state") else model.state_dict()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(model: Classifier, path: str | os.PathLike, *, training: dict | None = None) -> Path:
    """Write ``model`` as safetensors, with its :class:`ModelSpec` as JSON in the metadata; atomic.

    ``training``: how ncbench trained it (``{"job_id", "recipe", "seed", "dataset"}``), kept in the metadata
    so that evaluating the checkpoint later knows the recipe (``ls_gap`` uses its weight decay) and the seed.
    """
    from safetensors.torch import save

    if getattr(model, "spec", None) is None:
        raise InputError("the model has no spec; build it with ncbench.models.create_model")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"checkpoints are written as .safetensors; got {path.name}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {SPEC_KEY: json.dumps(model.spec.to_dict())}
    if training is not None:
        meta[TRAINING_KEY] = json.dumps(training, sort_keys=True)
    return write_replace(path, save(state, metadata=meta))  # whole or not at all, fsynced


def _read_safetensors(path: Path):
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for every malformed header
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(err).__name__}: "
                              f"{_one_line(str(err))})") from None
    if SPEC_KEY not in meta:
        raise CheckpointError(f"{path}: the safetensors metadata has no {SPEC_KEY!r}; save with `ncbench train` "
                              "or ncbench.models.save_checkpoint")
    try:
        spec = json.loads(meta[SPEC_KEY])
        training = json.loads(meta[TRAINING_KEY]) if TRAINING_KEY in meta else None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the metadata is not valid JSON ({_one_line(str(err))})") from None
    return spec, state, training


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: the parts of torch's weights-only refusal that are about torch, not about the file
_TORCH_BOILERPLATE = (re.compile(r"Weights only load failed\..*?trusted source\.", re.S),
                      re.compile(r"Please file an issue.*?use case:", re.S), re.compile(r"WeightsUnpickler error:"),
                      re.compile(r"Check the documentation of torch\.load.*", re.S))


def _one_line(text: str, limit: int = 160) -> str:
    """``text`` as one plain line: terminal colour codes removed, whitespace collapsed, and cut at a word
    boundary (with an ellipsis) when longer than ``limit`` characters."""
    text = " ".join(_ANSI.sub("", text).split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:") + " ..."


def _unpickling_detail(err: Exception) -> str:
    """What torch's weights-only loader objected to, without its advice about torch.load."""
    text = _ANSI.sub("", str(err))
    for pattern in _TORCH_BOILERPLATE:
        text = pattern.sub(" ", text)
    return _one_line(text) or type(err).__name__


def _read_state_dict(path: Path):
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the way to refusing
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused: the file holds pickled Python objects, not only tensors (torch's weights-only "
            f"loader: {_unpickling_detail(err)}); ncbench loads only .safetensors files or a .pt holding "
            "{'spec': ..., 'state_dict': ...} of plain tensors (ncbench.models.save_checkpoint writes the former)"
        ) from None
    except Exception as err:  # zip/pickle framing errors of a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: "
                              f"{_one_line(str(err))})") from None
    if not (isinstance(obj, dict) and "spec" in obj and "state_dict" in obj):
        raise CheckpointError(f"{path}: expected a dict with 'spec' and 'state_dict' (a weights_only checkpoint "
                              "written by ncbench); got " + (f"keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict)
                                                            else type(obj).__name__))
    training = obj.get("training")
    if training is not None and not isinstance(training, dict):
        raise CheckpointError(f"{path}: 'training' must be a dict (how ncbench trained the weights)")
    return obj["spec"], obj["state_dict"], training


#: the prefix nn.DataParallel and DistributedDataParallel put before every name of the wrapped model's state
DATA_PARALLEL_PREFIX = "module."


def strip_data_parallel_prefix(state) -> tuple[dict, str | None]:
    """``state`` without DataParallel's ``module.`` prefix when *every* name carries it, and a note saying so
    (None when nothing was changed). A prefix on only some names is left alone (the load then refuses it)."""
    if not isinstance(state, dict) or not state:
        return state, None
    if not all(isinstance(k, str) and k.startswith(DATA_PARALLEL_PREFIX) for k in state):
        return state, None
    n = len(DATA_PARALLEL_PREFIX)
    note = (f"stripped DataParallel's {DATA_PARALLEL_PREFIX!r} prefix from all {len(state)} weight names "
            "(the weights were saved from a model wrapped in nn.DataParallel or DistributedDataParallel)")
    return {k[n:]: v for k, v in state.items()}, note


class ExportedClassifier(nn.Module):
    """A ``torch.export`` program whose forward returns ``(features, logits)``: one model, one function.

    Accuracy, the attacks and the features all come from the program itself (``forward`` returns its
    logits; ``features_and_logits`` both from one call). The collapse metrics need the final layer's W and b:
    ``fc`` is fitted by least squares on seeded random inputs and must reproduce the program's logits
    (``fc_fit_residual``, the largest absolute difference, is checked and kept). Moving the model moves the
    program too. The program is not a registered submodule: an exported program cannot switch between train
    and eval mode (``GraphModule.eval()`` raises), and its modules' flags would mislead the eval-mode check.
    """

    def __init__(self, program, input_shape) -> None:
        super().__init__()
        self.__dict__["program"] = program
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            f, z = self.features_and_logits(torch.rand(2, *input_shape, generator=g))
            n = max(64, 2 * (f.shape[1] + 1))
            f, z = self.features_and_logits(torch.rand(n, *input_shape, generator=g))
            if bool((z >= 0).all()) and torch.allclose(z.sum(1), torch.ones_like(z[:, 0]), atol=1e-4):
                raise CheckpointError("refused: every output row is non-negative and sums to 1: the exported program "
                                      "returns probabilities (softmax), not logits; export the logits")
            x = torch.cat([f.double(), torch.ones(n, 1, dtype=torch.float64)], 1)
            theta = torch.linalg.lstsq(x, z.double()).solution  # (D+1, C)
            err = float((x @ theta - z.double()).abs().max())
        if err > 1e-3 * max(1.0, float(z.abs().max())):
            raise CheckpointError(f"the exported program's logits are not an affine function of its features "
                                  f"(residual {err:.3g}); export a module returning (features, logits) from a final "
                                  "linear layer")
        self.fc_fit_residual = err
        self.fc = nn.Linear(f.shape[1], z.shape[1])
        with torch.no_grad():
            self.fc.weight.copy_(theta[:-1].T.float())
            self.fc.bias.copy_(theta[-1].float())

    def features_and_logits(self, x):
        try:
            out = self.program(x)
        except AssertionError as err:  # torch.export's shape guards
            raise CheckpointError(f"the exported program refused a batch of {x.shape[0]} ({err}); export it with a "
                                  "dynamic batch dimension (dynamic_shapes)") from None
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise CheckpointError("the exported program must return (features, logits); it returned "
                                  f"{type(out).__name__}")
        return out[0].flatten(1), out[1]

    def features(self, x):
        return self.features_and_logits(x)[0]

    def forward(self, x):
        return self.features_and_logits(x)[1]

    def _apply(self, fn, *args, **kwargs):
        self.program._apply(fn)  # .to(device) moves the program's weights, not only fc
        return super()._apply(fn, *args, **kwargs)

    def parameters(self, recurse: bool = True):
        """The program's parameters: what the model is (counted, frozen during attacks). ``fc`` is derived
        from them for the collapse metrics and is not a parameter of the model."""
        return self.program.parameters(recurse)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self.program.named_parameters(prefix=prefix or "program", recurse=recurse,
                                             remove_duplicate=remove_duplicate)

    def checksum_state(self) -> dict:
        """The program's weights and its graph's code: two programs with the same weights but another
        computation are different models."""
        state = {f"program.{k}": v for k, v in self.program.state_dict().items()}
        code = str(getattr(self.program, "code", "")).encode()
        state["program.__code__"] = torch.frombuffer(bytearray(code), dtype=torch.uint8) if code else torch.empty(0)
        return state


def _load_exported(path: Path, trust: bool) -> nn.Module:
    if not trust:
        raise CheckpointError(f"{path}: refused: torch.export archives unpickle parts of their content "
                              "(torch.export.load uses torch.load with weights_only=False), so ncbench loads them only "
                              "for files you made yourself: pass trust=True (--trust-checkpoint)")
    try:
        ep = torch.export.load(str(path))
    except Exception as err:  # a corrupt or foreign archive
        raise CheckpointError(f"{path}: not a readable torch.export archive ({type(err).__name__}: "
                              f"{_one_line(str(err))})") from None
    args = ep.example_inputs[0] if ep.example_inputs else ()
    if len(args) != 1:
        raise CheckpointError(f"{path}: the exported program must take one input tensor")
    shape = tuple(args[0].shape[1:])
    model = ExportedClassifier(ep.module(), shape)
    model.spec = ModelSpec("torch.export", model.fc.out_features, shape)
    model.trained_by = None
    model.load_note = None
    return model


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    trust: bool = False) -> Classifier:
    """Rebuild a model from a ``.safetensors`` file (spec in its metadata) or a ``weights_only`` ``.pt``
    holding ``{"spec": {...}, "state_dict": {...}}``. Never unpickles arbitrary objects. A ``torch.export``
    archive (``.pt2``) whose program returns ``(features, logits)`` loads only with ``trust=True``.

    The model's ``trained_by`` attribute holds how ncbench trained it (from the checkpoint's metadata), or
    None for a checkpoint that ncbench did not write. A state dict whose every name starts with DataParallel's
    ``module.`` prefix loads with the prefix stripped; ``load_note`` then says so (else it is None): put it in
    the record. Every refusal is a :class:`CheckpointError` whose one-line message names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".pt2":
        return _load_exported(path, trust).to(map_location).eval()
    if path.suffix == ".safetensors":
        spec_d, state, training = _read_safetensors(path)
    elif path.suffix in (".pt", ".pth"):
        spec_d, state, training = _read_state_dict(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint format {path.suffix!r}; use .safetensors, .pt or .pt2")
    try:
        spec = ModelSpec.from_dict(spec_d)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if spec.arch not in MODELS:
        raise CheckpointError(f"{path}: {MODELS.unknown_message(spec.arch)}")
    try:
        model = create_model(spec.arch, input_shape=spec.input_shape, num_classes=spec.num_classes,
                             mean=spec.mean, std=spec.std, **spec.args)
    except InputError as err:
        raise CheckpointError(f"{path}: {err}") from None
    state, note = strip_data_parallel_prefix(state)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: weights do not fit architecture {spec.arch!r}: "
                              f"{_one_line(str(err), 300)}") from None
    model.trained_by = training
    model.load_note = note
    return model.to(map_location).eval()

