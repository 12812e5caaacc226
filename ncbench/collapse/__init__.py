"""Neural-collapse metrics as pure functions of arrays (spec: docs/metrics.md).

``collapse_metrics`` takes features in memory; ``collapse_metrics_streaming`` and ``CollapseAccumulator``
take them in batches. Per-layer collapse of a model (forward hooks) lives with the other code that runs models,
in :mod:`ncbench.features`; ``ncbench.collapse.layer_collapse`` still finds it.
"""

from ._api import GLOBAL_MEANS, collapse_metrics, collapse_metrics_streaming
from ._metrics import HIGHER_IS_BETTER, TEST_KEYS, TRAIN_KEYS, CollapseWarning
from ._stats import CollapseAccumulator, SplitStats

__all__ = [
    "GLOBAL_MEANS", "HIGHER_IS_BETTER", "TEST_KEYS", "TRAIN_KEYS", "CollapseAccumulator", "CollapseWarning",
    "SplitStats", "collapse_metrics", "collapse_metrics_streaming", "layer_collapse",
]


def __getattr__(name):  # layer_collapse runs a model, so it lives in ncbench.features
    if name == "layer_collapse":
        from ..features import layer_collapse

        return layer_collapse
    raise AttributeError(f"module 'ncbench.collapse' has no attribute {name!r}")
