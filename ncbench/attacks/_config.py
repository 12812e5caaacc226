"""Attack settings: one validated dataclass. Budgets are in the [0, 1] input scale."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .._errors import InputError
from .._registry import Registry

ATTACKS: Registry = Registry("attack")
NORMS = ("Linf", "L2")
PRECISIONS = ("fp32", "bf16")
MARGINS = ("none", "fab")


@dataclass(frozen=True)
class AttackConfig:
    """One attack over an eps grid.

    name : a registered attack (``list_attacks()``); norm : "Linf" or "L2"; eps : budgets, ascending.
    steps, alpha_factor : iterations and step size alpha = alpha_factor * eps / steps (PGD; Madry et al. 2.5).
    random_start, restarts : PGD's uniform start in the eps-ball and the number of restarts (each on the
        points still robust).
    n_points : attack the first n test points (None: all). batch_size : points per batch.
    margin : "fab" adds the mean minimal perturbation norm found by untargeted FAB on ``margin_points``
        correctly classified points (a margin measure to regress on collapse); "none" skips it.
    precision : "bf16" runs the attack's forward passes under bf16 autocast; the disagreement of bf16 and
        fp32 predictions on a sample is measured and recorded.
    check_points : sample size of the randomness, softmax and zero-gradient checks.
    """

    name: str = "pgd"
    norm: str = "Linf"
    eps: tuple[float, ...] = (0.0, 0.01, 0.02, 0.04)
    steps: int = 20
    alpha_factor: float = 2.5
    random_start: bool = True
    restarts: int = 1
    n_points: int | None = None
    batch_size: int = 1000
    margin: str = "none"
    margin_points: int = 200
    precision: str = "fp32"
    cw_c: float = 1.0
    cw_steps: int = 100
    cw_lr: float = 0.01
    square_queries: int = 5000
    check_points: int = 256

    def __post_init__(self) -> None:
        ATTACKS.get(self.name)  # unknown names fail here, listing the valid ones
        if self.norm not in NORMS:
            raise InputError(f"norm must be one of {NORMS}; got {self.norm!r}")
        supported = getattr(ATTACKS.get(self.name), "norms", NORMS)
        if self.norm not in supported:
            raise InputError(f"attack {self.name!r} supports norm(s) {supported}; got {self.norm!r}")
        if not self.eps:
            raise InputError("the eps grid is empty; give at least one budget, e.g. 0.02")
        for e in self.eps:
            if not (isinstance(e, (int, float)) and math.isfinite(e) and e >= 0):
                raise InputError(f"eps must be a number >= 0; got {e!r}")
            if self.norm == "Linf" and e > 1:
                raise InputError(f"eps must be in [0, 1] (inputs are scaled to [0,1]); got {e:g}")
        if self.steps < 1 or self.batch_size < 1 or self.restarts < 1 or not self.alpha_factor > 0:
            raise InputError("steps, restarts and batch_size must be >= 1 and alpha_factor > 0")
        if self.n_points is not None and self.n_points < 1:
            raise InputError(f"n_points must be >= 1 or None; got {self.n_points}")
        if self.margin not in MARGINS:
            raise InputError(f"margin must be one of {MARGINS}; got {self.margin!r}")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["eps"] = list(self.eps)
        return d


def register_attack(name: str, *, norms: tuple[str, ...] = NORMS):
    """Register ``factory(model, eps, cfg, num_classes, generator, points) -> attack``.

    ``points`` holds every input of the evaluation, in order; ``attack(x, y, idx) -> (x_adv, info)`` attacks
    the batch ``x = points[idx]`` (only points still robust are passed)."""
    def decorator(factory):
        factory.norms = norms
        return ATTACKS.register(name)(factory)
    return decorator


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)
