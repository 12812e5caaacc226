"""Neural-collapse metrics (spec: docs/metrics.md).

``collapse_metrics`` takes features in memory; ``collapse_metrics_streaming`` and ``CollapseAccumulator``
take them in batches; ``layer_collapse`` measures named modules of a model through forward hooks, exactly at
any width. This package imports nothing from ``ncbench.features`` (which re-exports ``layer_collapse``).
"""

from ._api import GLOBAL_MEANS, collapse_metrics, collapse_metrics_streaming
from ._layers import LAYER_KEYS, layer_collapse
from ._metrics import HIGHER_IS_BETTER, TEST_KEYS, TRAIN_KEYS, CollapseWarning
from ._stats import CollapseAccumulator, SplitStats

__all__ = [
    "GLOBAL_MEANS", "HIGHER_IS_BETTER", "LAYER_KEYS", "TEST_KEYS", "TRAIN_KEYS", "CollapseAccumulator",
    "CollapseWarning", "SplitStats", "collapse_metrics", "collapse_metrics_streaming", "layer_collapse",
]
