"""Attack settings: one validated dataclass. Budgets are in the [0, 1] input scale."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .._budget import canonical_eps, eps_label
from .._coerce import coerce_dataclass
from .._errors import InputError
from .._registry import Registry
from .._coerce import PRECISIONS  # one list of numeric precisions for training and attacks

ATTACKS: Registry = Registry("attack")
NORMS = ("Linf", "L2")
MARGINS = ("none", "fab")


def _positive_int(v) -> bool:
    return v >= 1


#: (field, test, rule in words): each refusal names the one field and value at fault
_NUMERIC_RULES = (
    *((name, _positive_int, ">= 1") for name in ("steps", "restarts", "batch_size", "margin_points", "cw_steps",
                                                 "cw_search_steps", "deepfool_steps", "square_queries",
                                                 "check_points", "apgd_steps", "apgd_targets")),
    *((name, lambda v: v > 0, "> 0") for name in ("alpha_factor", "cw_c", "cw_lr")),
    ("deepfool_overshoot", lambda v: v >= 0, ">= 0"),
)


@dataclass(frozen=True)
class AttackConfig:
    """One attack over an eps grid.

    name : a registered attack (``list_attacks()``); norm : "Linf" or "L2"; eps : budgets, ascending.
    steps, alpha_factor : iterations and step size alpha = alpha_factor * eps / steps (PGD; Madry et al. 2.5).
    random_start, restarts : PGD's uniform start in the eps-ball and the number of restarts (each on the
        points still robust).
    n_points : attack the first n test points (None: all). batch_size : points per batch; not part of the
        identity (it changes no result: docs/attacks.md, "Seeding"); AutoAttack runs on fixed chunks of 256
        positions instead.
    cw_steps, cw_lr, cw_c, cw_search_steps : Carlini-Wagner L2: Adam steps and learning rate per c, the
        initial c, and the number of binary-search steps over c (per point).
    deepfool_steps, deepfool_overshoot : DeepFool's iterations and overshoot.
    margin : "fab" adds the mean minimal perturbation norm found by untargeted FAB on ``margin_points``
        correctly classified points (a margin measure to regress on collapse); "none" skips it.
    precision : "bf16" runs the attack's forward passes under bf16 autocast; the disagreement of bf16 and
        fp32 predictions on a sample is measured and recorded.
    square_queries : Square's queries (AutoAttack).
    apgd_steps, apgd_targets : the ``apgd`` attack: iterations of APGD-CE and of APGD-T per target, and APGD-T's
        number of target classes (the most likely wrong ones; at most C - 1).
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
    cw_search_steps: int = 5
    deepfool_steps: int = 50
    deepfool_overshoot: float = 0.02
    square_queries: int = 5000
    apgd_steps: int = 100
    apgd_targets: int = 9
    check_points: int = 256

    def __post_init__(self) -> None:
        ATTACKS.get(self.name)  # unknown names fail here, listing the valid ones
        if isinstance(self.eps, (str, int, float)):
            raise InputError(f"eps must be a list of budgets, e.g. [0, 0.01]; got {self.eps!r}")
        # canonical, ascending, each once: the grid is evaluated in that order, and it is what the identity holds
        object.__setattr__(self, "eps", tuple(sorted({canonical_eps(e) for e in self.eps})))
        coerce_dataclass(self, "attack")
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
        for name, ok, rule in _NUMERIC_RULES:
            value = getattr(self, name)
            if not ok(value):
                raise InputError(f"{name} must be {rule}; got {value!r}")
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

    def own_params(self) -> dict:
        """The settings this attack uses (and only those): e.g. PGD's steps, not CW's."""
        return {k: getattr(self, k) for k in ATTACKS.get(self.name).params}

    def identity(self, seed: int) -> dict:
        """What decides this attack's numbers (docs/records.md): the job identity's ``attack`` part."""
        d = {"name": self.name, "norm": self.norm, "eps": list(self.eps), "n_points": self.n_points,
             "precision": self.precision, "seed": int(seed), "check_points": self.check_points,
             "params": self.own_params(), "margin": self.margin}
        if self.margin != "none":
            d["margin_points"] = self.margin_points
        return d

    def label(self) -> str:
        """What ran, in words: the attack's name, norm and its own settings."""
        return ATTACKS.get(self.name).describe(self)

    def eps_labels(self) -> list[str]:
        return [eps_label(e) for e in self.eps]


@dataclass(frozen=True)
class JobContext:
    """What a registered attack gets from the job besides the model and the budget.

    seed : the job's seed; every random number the attack draws is derived from it and named facts
        (``_seeding``), never from torch's global generator.
    advance : ``advance(n)`` moves the progress bar by ``n`` points (composite attacks report each component;
        the curve tops each batch up to its size).
    """

    seed: int
    advance: object = lambda n: None


def register_attack(name: str, *, norms: tuple[str, ...] = NORMS, params: tuple[str, ...] = (),
                    describe=None, minimal_norm: bool = False, chunked: bool = False):
    """Register ``factory(model, eps, cfg, num_classes, job, points) -> attack``.

    ``job`` is a :class:`JobContext`; ``points`` holds every input of the evaluation, in order;
    ``attack(x, y, idx) -> (x_adv, info)`` attacks the batch ``x = points[idx]`` (only points still robust are
    passed; ``idx`` are their positions, from which per-point noise is drawn). ``params`` names the
    :class:`AttackConfig` fields the attack uses (they, and only they, enter the job identity);
    ``describe(cfg) -> str`` labels a run (default: the name, norm and those settings). ``minimal_norm``: the
    attack searches for each point's smallest adversarial example whatever the budget (CW, DeepFool); the
    robustness curve runs it once and counts a point at each eps where its example is within eps.
    ``chunked``: the attack's randomness is shared by a batch (Square), so the curve passes it the points of
    one fixed chunk of positions at a time (``_seeding.CHUNK``) instead of ``batch_size`` points."""
    unknown = sorted(set(params) - {f.name for f in __import__("dataclasses").fields(AttackConfig)})
    if unknown:
        raise ValueError(f"attack {name!r}: unknown AttackConfig field(s) {unknown}")

    def default(cfg: AttackConfig) -> str:
        settings = ", ".join(f"{k} {getattr(cfg, k)}" for k in params)
        return f"{name}-{cfg.norm}" + (f" ({settings})" if settings else "")

    def decorator(factory):
        factory.norms = norms
        factory.params = tuple(params)
        factory.describe = describe or default
        factory.minimal_norm = minimal_norm
        factory.chunked = chunked
        return ATTACKS.register(name)(factory)
    return decorator


def list_attacks(pattern: str = "*") -> list[str]:
    return ATTACKS.names(pattern)
