"""``ncbench evaluate`` as a researcher meets it: the checkpoint's own dataset, kept models, refusals."""

import json

import pytest

from ncbench.cli import main

FAST = "measures: false\nadv_collapse_points: 0\ncollapse_epochs: 0\n"


def test_a_checkpoint_is_evaluated_on_the_dataset_it_records(tmp_path, capsys):
    # catches: --checkpoint falling back to the default dataset (mnist1d) and refusing the digits model
    ckpt = tmp_path / "my-mlp.safetensors"
    assert main(["train", "--dataset", "digits", "--epochs", "1", "--out", str(ckpt), "--quiet"]) == 0
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(FAST)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--config", str(cfg), "--eps", "0,0.05", "--steps", "1",
                 "--n-points", "20", "--output", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "using the checkpoint's dataset: digits" in captured.err
    rec = json.loads(next((tmp_path / "out").glob("digits-*.json")).read_text())
    assert rec["provenance"]["dataset"]["name"] == "digits"
    # --dataset still chooses: the wrong one is refused naming both shapes
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "mnist1d", "--config", str(cfg), "--quiet",
                 "--output", str(tmp_path / "out")]) == 2
    assert "(1, 8, 8)" in capsys.readouterr().err


def test_evaluate_keeps_its_model_and_reuses_it_for_another_attack(tmp_path, capsys):
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(FAST + "model_args: {width: 16, depth: 1}\n")
    args = ["evaluate", "--dataset", "digits", "--epochs", "1", "--config", str(cfg), "--eps", "0,0.05", "--steps",
            "1", "--n-points", "20", "--output", str(tmp_path), "--quiet"]
    assert main(args) == 0
    kept = sorted(p.name for p in (tmp_path / "models").glob("*.safetensors"))
    assert len(kept) == 2 and kept[0] == kept[1].replace(".safetensors", ".init.safetensors")  # initial, weights
    capsys.readouterr()
    assert main(args[:-1] + ["--attack", "fgsm", "--quiet"]) == 0
    assert "reusing the model this training gave before" in capsys.readouterr().err
    records = [json.loads(p.read_text()) for p in tmp_path.glob("digits-*.json")]
    assert len(records) == 2 and len({r["provenance"]["model"]["checksum"] for r in records}) == 1


@pytest.mark.parametrize("argv,message", [
    (["--seed", "-1"], "seed must be a whole number >= 0; got -1"),
])
def test_bad_options_are_refused_naming_the_option_and_value(argv, message, capsys, tmp_path):
    assert main(["evaluate", "--dataset", "digits", "--output", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing written


def test_long_training_is_announced_with_the_faster_cpu_choice(monkeypatch, tmp_path):
    # catches: --dataset mnist starting the GPU-sized cnn2d recipe on a CPU without a word (about 20 minutes on
    # 8,000 images here). The files are not here: the estimate uses MNIST's standard sizes.
    from ncbench._eta import training_estimate
    from ncbench.config import build_config

    est = training_estimate(build_config({"dataset": "mnist", "data_dir": str(tmp_path)}, device="cpu", threads=1))
    assert est is not None and est["seconds"] > 600
    assert "--model mlp" in est["faster"]
    small = training_estimate(build_config({"dataset": "digits", "train": {"epochs": 2}}, device="cpu", threads=1))
    assert small["seconds"] < 120 and small["faster"] == ""


def test_a_checkpoint_keeps_the_validation_split_it_was_trained_with(tmp_path, capsys):
    # catches: mnist1d's default 500-point validation split carved out of data a checkpoint trained on (val.* and
    # ATC would then be training-set numbers presented as held out)
    ckpt = tmp_path / "all.safetensors"
    assert main(["train", "--epochs", "1", "--val-size", "0", "--out", str(ckpt), "--quiet"]) == 0
    cfg = tmp_path / "fast.yaml"
    cfg.write_text(FAST)
    out = tmp_path / "out"
    common = ["--config", str(cfg), "--eps", "0,0.01", "--steps", "1", "--n-points", "20", "--output", str(out),
              "--quiet"]
    assert main(["evaluate", "--checkpoint", str(ckpt), *common]) == 0
    rec = json.loads(next(out.glob("mnist1d-*.json")).read_text())
    assert rec["provenance"]["dataset"]["n_val"] == 0 and rec["accuracy"]["val"] is None
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--val-size", "300", *common]) == 2
    assert "would hold out points it trained on" in capsys.readouterr().err
