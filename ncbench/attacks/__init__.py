"""Adversarial robustness through torchattacks, with the checks that make a robust accuracy trustworthy.

Threat models Linf and L2 with eps in the [0, 1] input scale. ``robustness_curve`` attacks a model over an
eps grid; ``list_attacks()`` names the attacks (``pgd``, ``fgsm``, ``cw``, ``deepfool``, ``autoattack``, ``apgd``).
"""

from . import _autoattack, _library  # noqa: F401  (registers the attacks)
from ._autoattack import autoattack_components
from ._config import ATTACKS, MARGINS, NORMS, PRECISIONS, AttackConfig, JobContext, list_attacks, register_attack
from ._library import min_perturbation_fab
from ._pgd import pgd
from ._run import adversarial_examples, robust_at, robustness_curve

__all__ = ["ATTACKS", "MARGINS", "NORMS", "PRECISIONS", "AttackConfig", "JobContext", "adversarial_examples",
           "autoattack_components", "list_attacks", "min_perturbation_fab", "pgd", "register_attack", "robust_at", "robustness_curve"]
