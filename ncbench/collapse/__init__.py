"""Neural-collapse metrics as pure functions (spec: docs/metrics.md).

``collapse_metrics`` takes features in memory; ``collapse_metrics_streaming`` and ``CollapseAccumulator``
take them in batches; ``layer_collapse`` measures named modules of a model.
"""

from ._api import GLOBAL_MEANS, collapse_metrics, collapse_metrics_streaming
from ._layers import layer_collapse
from ._metrics import HIGHER_IS_BETTER, TEST_KEYS, TRAIN_KEYS, CollapseWarning
from ._stats import CollapseAccumulator, SplitStats

__all__ = [
    "GLOBAL_MEANS", "HIGHER_IS_BETTER", "TEST_KEYS", "TRAIN_KEYS", "CollapseAccumulator", "CollapseWarning",
    "SplitStats", "collapse_metrics", "collapse_metrics_streaming", "layer_collapse",
]
