"""Hand-made v2 records and fake job functions for the store and sweep tests.

Workers (process pools, Ray, submitit) import the fake jobs from here by name: the tests put this folder on
their PYTHONPATH.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

DIGITS_SMALL = {"dataset": "digits", "model": "mlp", "model_args": {"width": 16, "depth": 1},
                "train": {"epochs": 2}, "attack": {"eps": [0, 0.1], "steps": 2, "n_points": 50},
                "collapse_epochs": 0}


def fake_job_id(cfg) -> str:
    """A stand-in for ncbench.identity.compute_job_id: sha256 of the config without paths and device."""
    d = cfg.to_dict()
    for key in ("output", "device", "threads", "data_dir", "download"):
        d.pop(key, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def hex_id(text) -> str:
    return hashlib.sha256(str(text).encode()).hexdigest()


def robustness(name="pgd", eps=(0.0, 0.1), robust=(0.9, 0.4), *, reliable=True, margin=None, seed=0):
    """One attack's result in the record's shape (a full ``Robustness``)."""
    from ncbench._budget import eps_label

    curve = [{"eps": float(e), "eps_label": eps_label(e), "robust_accuracy": float(r), "n_attacked": 50,
              "wall_time_s": 0.1} for e, r in zip(eps, robust)]
    if margin is not None:
        margin = {"method": "fab", "norm": "Linf", "n_points": 50, "n_found": 50, **margin}
    return {"name": name, "norm": "Linf", "label": f"{name.upper()}-Linf", "params": {"steps": 2},
            "eps": [float(e) for e in eps], "eps_labels": [eps_label(e) for e in eps], "n_points": 50,
            "precision": "fp32", "seed": seed, "batch_size": 1000, "check_points": 256,
            "clean_accuracy": float(robust[0]), "curve": curve, "first_fooled_eps": [None] * 50, "checks": [],
            "reliable": reliable, "unreliable_reasons": [] if reliable else ["a check failed"], "margin": margin,
            "bf16_disagreement": None, "wall_time_s": 0.5}


def make_record(job_id, *, dataset="digits", model="mlp", seed=0, sweep=None, axes=None, train_acc=1.0,
                test_acc=0.9, eps=(0.0, 0.1), robust=(0.9, 0.4), wall=2.0, nc1=(0.1, 0.5), reliable=True,
                extra=None, margin=None, terminal_phase_epoch=3, environment=None, created="2026-01-01T00:00:00+00:00"):
    """A valid schema-3 record (ncbench.record.validate_record) with the fields the frame reads."""
    return {
        "schema_version": 3, "kind": "ncbench.evaluate", "created": created,
        "provenance": {
            "job_id": job_id, "identity": {"dataset": dataset}, "ncbench_version": "0.2.0", "versions": {},
            "environment": dict(environment or {}), "seed": seed,
            "config": {"dataset": dataset, "model": model, "seed": seed},
            "sweep": {"name": sweep, "axes": dict(axes or {})} if sweep else None,
            "dataset": {"name": dataset, "n_train": 100, "n_test": 50},
            "model": {"arch": model, "num_classes": 10, "input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0],
                      "args": {}, "checksum": "0" * 64, "num_parameters": 1234, "source": "trained",
                      "checkpoint": None, "trained_by": None},
            "ls_gap_weight_decay": 5e-3,
            "wall_time_s": {"data": 0.1, "train": wall / 2, "total": float(wall)},
        },
        "training": {"terminal_phase_epoch": terminal_phase_epoch, "final_loss": 0.01, "precision": "fp32",
                     "history": [], "collapse_history": []},
        "accuracy": {"train": float(train_acc), "test": float(test_acc), "val": None, "train_adv": None},
        "collapse": {"train": {"nc1": float(nc1[0]), "nc2_equinorm": 0.2},
                     "test": {"nc1": float(nc1[1]), "nc2_equinorm": 0.3}},
        "collapse_info": {},
        "measures": {"num_parameters": 1234, "sum_squared_weights": 56.5, "train_margin_p10": 1.5,
                     "final_train_loss": 0.01},
        "measures_info": {},
        "estimators": {"confidence": None, "atc": None, "atc_threshold": None},
        "predictions": {},
        "robustness": robustness("pgd", eps, robust, reliable=reliable, margin=margin, seed=seed),
        "extra_robustness": list(extra or []),
    }


def fake_job(spec):
    """Returns a record for the spec (a cell with ``seed: 13`` raises, like a job that fails)."""
    import torch

    if spec.config.get("seed") == 13:
        raise ValueError("unlucky seed 13")
    delay = float(os.environ.get("NCBENCH_TEST_JOB_DELAY", "0"))
    if delay:
        time.sleep(delay)
    marks = os.environ.get("NCBENCH_TEST_JOB_MARKS")
    if marks:  # a file per finished job, for tests that act once a job has finished (not read from the store)
        Path(marks, spec.job_id).touch()
    return make_record(spec.job_id, dataset=spec.config.get("dataset", "digits"), seed=spec.config.get("seed", 0),
                       sweep=spec.sweep, axes=spec.axes, test_acc=0.5 + 0.01 * (spec.cell or 0),
                       environment={"pid": os.getpid(), "threads": torch.get_num_threads()})


def killing_job(spec):
    """Kills its own worker process for the cell with ``seed: 1`` (a worker that dies, e.g. out of memory)."""
    import signal

    if spec.config.get("seed") == 1:
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGKILL)
    return fake_job(spec)


def write_records(path, job_ids, sweep=None, barrier=None):
    """Child process of the concurrency test: open its own store and write each record (and some failures),
    starting when every writer is ready (``barrier``) so that the writes overlap."""
    from ncbench.store import ResultsStore

    if barrier is not None:
        barrier.wait(60)
    with ResultsStore(path) as store:
        for i, job_id in enumerate(job_ids):
            if i % 7 == 3:
                store.put_failure(job_id, sweep=sweep, axes={"i": i}, dataset="digits", model="mlp", config={},
                                  error="boom")
            store.put_record(make_record(job_id, sweep=sweep, axes={"i": i}), sweep=sweep, axes={"i": i})


def parser():
    """The sweep and results commands on their own parser (as ncbench.cli wires them)."""
    from ncbench._cli_sweep import register

    p = argparse.ArgumentParser(prog="ncbench")
    register(p.add_subparsers(dest="command", required=True))
    return p


def cli(*argv):
    """Run a results/sweep command in this process: (exit code, stdout, stderr), errors as the CLI prints them."""
    from ncbench._errors import NcbenchError

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        args = parser().parse_args([str(a) for a in argv])
        try:
            code = args.func(args)
        except NcbenchError as e:  # as ncbench.cli.main prints it
            print(f"ncbench: error: {e}", file=err)
            code = 2
    return code, out.getvalue(), err.getvalue()
