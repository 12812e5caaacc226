"""ncbench: does neural collapse on train and held-out data predict test accuracy and robustness?"""

import os as _os
import sys as _sys

__version__ = "0.3.0"

# torch's OpenMP threads spin while they wait for work; beside other work on the same cores (a shared
# workstation, a cluster node, a sweep beside a test run) that made one run 25 times slower. Waiting threads
# that sleep cost little on an idle machine (benchmarks/bench_threads.py, docs/performance.md). libgomp reads the
# policy once, when torch loads it: so it is set here, before torch is imported, unless the user set it
# (or asked ncbench to keep libgomp's own default with NCBENCH_KEEP_OMP=1). Recorded in every record.
if "torch" not in _sys.modules and not _os.environ.get("NCBENCH_KEEP_OMP"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name):
    """``ncbench.evaluate_model``: evaluate a model held in memory (the pipeline of ``ncbench evaluate``),
    imported on first use so that ``import ncbench`` stays light."""
    if name == "evaluate_model":
        from .evaluate import evaluate_model

        return evaluate_model
    raise AttributeError(f"module 'ncbench' has no attribute {name!r}")
