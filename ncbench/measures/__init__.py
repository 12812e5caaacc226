"""Generalization measures: the strongest baselines of Jiang et al. (ICLR 2020, "Fantastic Generalization
Measures and Where to Find Them") and Dziugaite et al. (NeurIPS 2020, "In Search of Robust Measures of
Generalization"), for ncbench classifiers.

>>> from ncbench.measures import generalization_measures, MEASURE_NAMES
>>> out = generalization_measures(model, x_train, y_train, init_state=init)   # doctest: +SKIP
>>> out["values"]["pacbayes_mag_flatness"], out["info"]["mag_sigma"]["achieved"]   # doctest: +SKIP

Definitions, sources, the reference implementation's conventions and where ncbench differs: docs/measures.md.
"""

from ._api import FAMILIES, INIT_MEASURES, MARGIN_MEASURES, MEASURE_NAMES, generalization_measures
from ._fold import FoldedNetwork, Unsupported, fold_network
from ._norms import conv_operator_norm, layer_spectral_norm, path_norm

__all__ = ["FAMILIES", "INIT_MEASURES", "MARGIN_MEASURES", "MEASURE_NAMES", "FoldedNetwork", "Unsupported",
           "conv_operator_norm", "fold_network", "generalization_measures", "layer_spectral_norm", "path_norm"]
