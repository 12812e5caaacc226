"""Regenerate digits-mlp-fixed.expected.json: the numbers that evaluating the committed checkpoint
digits-mlp-fixed.safetensors gave on the machine named in the file. tests/test_fixed_reference.py checks that
any machine reproduces them within the tolerances it states.

    .venv/bin/python tests/data/regenerate_fixed.py

The checkpoint itself was made by `ncbench train --config <digits, model_args {width: 64, depth: 2}> --epochs 30
--seed 3` (its metadata holds the recipe and job id).
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
CHECKPOINT = HERE / "digits-mlp-fixed.safetensors"
EXPECTED = HERE / "digits-mlp-fixed.expected.json"
CONFIG = {"dataset": "digits", "attack": {"name": "pgd", "norm": "Linf", "eps": [0.0, 0.05, 0.1], "steps": 10},
          "device": "cpu", "measures": False, "adv_collapse_points": 0}


def evaluate(device: str = "cpu") -> dict:
    from ncbench.config import build_config
    from ncbench.evaluate import run_evaluate

    return run_evaluate(build_config({**CONFIG, "device": device}), checkpoint=str(CHECKPOINT), progress=False)


def main() -> None:
    rec = evaluate()
    env = rec["provenance"]["environment"]
    out = {"made_on": {k: env[k] for k in ("cpu_model", "cpu_capability", "threads", "blas", "onednn")},
           "torch": rec["provenance"]["versions"]["torch"], "job_id": rec["provenance"]["job_id"],
           "checksum": rec["provenance"]["model"]["checksum"], "accuracy": rec["accuracy"],
           "collapse": rec["collapse"],
           "curve": [{"eps": r["eps"], "robust_accuracy": r["robust_accuracy"]} for r in rec["robustness"]["curve"]]}
    EXPECTED.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED}")


if __name__ == "__main__":
    main()
