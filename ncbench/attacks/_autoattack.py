"""AutoAttack "standard" (Croce & Hein, ICML 2020) from torchattacks' components, seeded by the job, and
``apgd``: its two white-box gradient components alone (APGD-CE, then APGD-T).

Seeding (docs/attacks.md): APGD's only random numbers are its random start; ncbench draws it per point from
the point's position and the job's facts (``_seeding.point_noise``), so APGD-CE and APGD-T, whose iterates and
step sizes are per point, give a point the same result in any batch. FAB-T (one restart: no random numbers)
and Square (one window position per iteration for its whole batch) run on fixed chunks of positions, each
seeded from the job's seed, the budget and the chunk index. ``apgd`` and ``autoattack`` draw the same starts
for the same components and settings: ``apgd`` fools exactly the points AutoAttack's first two components fool.
"""

from __future__ import annotations

import functools
import types

import torch

from .._errors import InputError
from ._adapters import As4D, as_inputs, to_4d
from ._config import AttackConfig, register_attack
from ._seeding import CHUNK, attack_facts, derive_seed, point_noise, preserved_global_rng

APGD_RHO = 0.75  # the reference's step-size decay threshold (AutoAttack "standard")
SQUARE_P_INIT = 0.8


@functools.lru_cache(maxsize=None)
def capped_square():
    """torchattacks.Square with the reference's cap on the window side, ``s <= min(h, w)``.

    The reference (``autoattack/square.py``) caps the side of its square windows by the image's smaller
    side; torchattacks does not, so on a non-square image (MNIST-1D as 1x5x8) its L2 attack crashes on a
    window larger than the image and its Linf attack draws windows that stick out of it. Capping the
    schedule's p at ``m^2 c / n`` (m = min(h, w); under L2, whose window side is odd, the largest odd m) gives
    the reference's window sides; only for L2 on an even-sided image is the largest window m - 1, not m.
    Built on first use (torchattacks imports slowly).
    """
    import torchattacks

    class CappedSquare(torchattacks.Square):
        def attack_single_run(self, x, y):
            c, h, w = x.shape[1:]
            m = min(h, w)
            if self.norm == "L2" and m % 2 == 0:
                m -= 1
            if self.norm == "L2" and h < 5:  # its initial perturbation tiles the image with h // 5 windows
                raise InputError(f"L2 Square (in AutoAttack) needs images at least 5 pixels high, as the reference "
                                 f"does; inputs are arranged as {c}x{h}x{w}")
            self._p_cap = m * m / (h * w)
            return super().attack_single_run(x, y)

        def p_selection(self, it):
            return min(super().p_selection(it), self._p_cap)

    return CappedSquare


class _StartNoise:
    """Stands in for the module ``torch`` inside torchattacks' ``APGD.attack_single_run``: its two random draws,
    ``torch.rand(x.shape)`` (Linf) and ``torch.randn(x.shape)`` (L2), the random start and its only random
    numbers, return the per-point noise set just before the call; everything else is torch itself. A draw of
    another kind or shape, or none, raises: torchattacks' start would have changed under ncbench."""

    def __init__(self) -> None:
        self._pending = None

    def set(self, kind: str, noise: torch.Tensor) -> None:
        self._pending = (kind, noise)

    def _take(self, kind: str, shape) -> torch.Tensor:
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != kind or tuple(pending[1].shape) != tuple(shape):
            raise RuntimeError(f"torchattacks' APGD drew torch.{kind}({tuple(shape)}), which ncbench did not "
                               "expect: its random start changed; update ncbench/attacks/_autoattack.py")
        return pending[1]

    def rand(self, shape, *args, **kwargs) -> torch.Tensor:
        return self._take("rand", shape)

    def randn(self, shape, *args, **kwargs) -> torch.Tensor:
        return self._take("randn", shape)

    def unused(self) -> bool:
        return self._pending is not None

    def __getattr__(self, name):
        return getattr(torch, name)


@functools.lru_cache(maxsize=None)
def seeded_apgd(targeted: bool):
    """torchattacks' APGD (``targeted``: APGDT, the targeted DLR loss) whose random start is drawn per point.

    ``run(x, y, positions, facts)`` replaces torchattacks' ``perturb``: the same loops (APGD-T: targets, the
    2nd to the (k+1)th most likely class, each over the restarts, each on the points still robust), calling
    torchattacks' own ``attack_single_run``, but with the start of restart r (and target t) of each point drawn
    from its position and ``facts`` instead of torch's global generator."""
    import torchattacks

    base = torchattacks.APGDT if targeted else torchattacks.APGD
    noise = _StartNoise()
    single = base.attack_single_run
    single = types.FunctionType(single.__code__, {**single.__globals__, "torch": noise}, single.__name__,
                                single.__defaults__, single.__closure__)

    class SeededAPGD(base):
        def run(self, x: torch.Tensor, y: torch.Tensor, positions: torch.Tensor, facts: dict) -> torch.Tensor:
            adv = x.clone()
            with torch.no_grad():
                robust = self.get_logits(x).argmax(1) == y
            kind = "rand" if self.norm == "Linf" else "randn"
            shape = tuple(x.shape[1:])
            draw = (lambda g: (torch.rand((CHUNK, *shape), generator=g),)) if kind == "rand" else \
                (lambda g: (torch.randn((CHUNK, *shape), generator=g),))
            for target in (range(2, self.n_target_classes + 2) if targeted else (None,)):
                for restart in range(self.n_restarts):
                    todo = robust.nonzero().flatten()
                    if todo.numel() == 0:
                        return adv
                    more = {"restart": restart} if target is None else {"restart": restart, "target": target - 1}
                    (start,) = point_noise({**facts, **more}, positions[todo], draw)
                    noise.set(kind, start)
                    if target is not None:
                        self.target_class = target
                    _, acc, _, found = single(self, x[todo], y[todo])
                    if noise.unused():
                        raise RuntimeError("torchattacks' APGD drew no random start: update "
                                           "ncbench/attacks/_autoattack.py")
                    fooled = ~acc.bool()
                    adv[todo[fooled]] = found[fooled]
                    robust[todo[fooled]] = False
            return adv

    return SeededAPGD


def _component(model, name: str, x_shape, run):
    """``attack(x, y, positions=None) -> x_adv`` around ``run(x4, y, positions)``, which attacks the (N, C, H, W)
    view torchattacks wants. Inputs are cast to the model's dtype, labels to int64; ``positions`` default to
    0..N-1 (the batch is the evaluation set); torch's global random state is restored after."""

    def attack(x, y, positions=None):
        x, y = as_inputs(model, x, y, who=f"AutoAttack component {name}")
        if tuple(x.shape[1:]) != tuple(x_shape[1:]):
            raise InputError(f"AutoAttack component {name}: inputs of shape {tuple(x.shape[1:])}; the component "
                             f"was built for {tuple(x_shape[1:])}")
        positions = torch.arange(x.shape[0], device=x.device) if positions is None else positions.to(x.device)
        with preserved_global_rng(x.device):
            return run(to_4d(x), y, positions).reshape(x.shape)

    return attack


def autoattack_components(model, eps, cfg: AttackConfig, num_classes: int, x_shape, seed: int = 0, *,
                          white_box_only: bool = False, steps: int = 100, targets: int = 9):
    """AutoAttack "standard" (Croce & Hein 2020) as ``(name, attack)`` pairs, in the reference's order.

    APGD-CE (``steps`` iterations, 1 restart, rho 0.75); APGD-T with the targeted DLR loss (``steps``
    iterations per target, the ``targets`` most likely wrong classes, at most C - 1); FAB-T (the same targets,
    100 iterations, 1 restart); Square (``cfg.square_queries`` queries, p_init 0.8, 1 restart, the reference's
    window cap). The targeted DLR loss needs C >= 4: with fewer classes APGD-T is left out.
    ``white_box_only``: APGD-CE and APGD-T alone (the ``apgd`` attack).

    Each ``attack(x, y, positions=None) -> x_adv`` takes inputs ``x`` (B, ...) of shape ``x_shape[1:]`` in
    [0, 1] (cast to the model's dtype), labels ``y`` (B,) (cast to int64) and the points' positions in the
    evaluation set (default 0..B-1). Randomness depends on ``seed``, the component and its settings,
    ``cfg.norm``, ``eps`` and the positions only (module docstring); the global random state is restored after
    each call. ``model`` is attacked as given (``robustness_curve`` passes it wrapped in its decision rule).
    """
    import torchattacks

    wrapped = As4D(model, tuple(x_shape[1:])).eval()
    n_targets = min(targets, num_classes - 1)

    def apgd(targeted: bool):
        kw = {"n_classes": n_targets + 1} if targeted else {"loss": "ce"}
        atk = seeded_apgd(targeted)(wrapped, norm=cfg.norm, eps=eps, steps=steps, n_restarts=1, rho=APGD_RHO, **kw)
        facts = attack_facts(seed, "apgd-t" if targeted else "apgd-ce", cfg.norm, eps,
                             {"steps": steps, "rho": APGD_RHO})
        return lambda x4, y, positions: atk.run(x4, y, positions, facts)

    def per_chunk(name: str, settings: dict, make):
        """A fresh torchattacks attack per fixed chunk of positions, seeded from the chunk index; its batch is
        the chunk's points in ascending position."""
        def run(x4, y, positions):
            out = x4.clone()
            chunk = torch.div(positions, CHUNK, rounding_mode="floor")
            for c in chunk.unique().tolist():
                rows = (chunk == c).nonzero().flatten()
                rows = rows[torch.argsort(positions[rows])]
                chunk_seed = derive_seed(attack_facts(seed, name, cfg.norm, eps, settings, chunk=int(c)))
                out[rows] = make(chunk_seed)(x4[rows], y[rows])
            return out
        return run

    parts = [("apgd-ce", apgd(False))]
    if num_classes >= 4:
        parts.append(("apgd-t", apgd(True)))
    if not white_box_only:
        fab = {"steps": 100, "n_restarts": 1, "targets": n_targets}
        parts.append(("fab-t", per_chunk("fab-t", fab, lambda s: torchattacks.FAB(
            wrapped, norm=cfg.norm, eps=eps, steps=100, n_restarts=1, multi_targeted=True,
            n_classes=n_targets + 1, seed=s))))
        square = {"n_queries": cfg.square_queries, "p_init": SQUARE_P_INIT, "n_restarts": 1}
        parts.append(("square", per_chunk("square", square, lambda s: capped_square()(
            wrapped, norm=cfg.norm, eps=eps, n_queries=cfg.square_queries, n_restarts=1, p_init=SQUARE_P_INIT,
            resc_schedule=False, seed=s))))
    return [(name, _component(model, name, x_shape, run)) for name, run in parts]


def _composite(model, eps, cfg, num_classes, job, points, **kw):
    """Each component only on the points still robust, in order; the worst case per point is kept; the progress
    bar moves after each component."""
    def attack(x, y, idx):
        comps = autoattack_components(model, eps, cfg, num_classes, x.shape, seed=job.seed, **kw)
        adv = x.clone()
        robust = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        fooled_by = {}
        for name, comp in comps:
            todo = robust.nonzero().flatten()
            fooled_by[name] = 0
            if todo.numel():
                a = comp(x[todo], y[todo], idx[todo])
                with torch.no_grad():
                    f = model(a).argmax(1) != y[todo]
                adv[todo[f]] = a[f]
                robust[todo[f]] = False
                fooled_by[name] = int(f.sum())
            job.advance(x.shape[0] / len(comps))
        return adv, {"fooled_by": fooled_by}

    return attack


def _describe_autoattack(cfg: AttackConfig) -> str:
    return (f"AutoAttack standard-{cfg.norm} (APGD-CE 100 it., APGD-T 100 it. x 9 targets, FAB-T 100 it. x 9 "
            f"targets, Square {cfg.square_queries} queries)")


@register_attack("autoattack", params=("square_queries",), describe=_describe_autoattack, chunked=True)
def _autoattack(model, eps, cfg: AttackConfig, num_classes, job, points):
    """AutoAttack standard; FAB-T and Square per fixed chunk of positions (the curve passes one chunk at a
    time), so the batch size does not change the result."""
    return _composite(model, eps, cfg, num_classes, job, points)


def _describe_apgd(cfg: AttackConfig) -> str:
    return (f"APGD-{cfg.norm}: APGD-CE {cfg.apgd_steps} it., then APGD-T {cfg.apgd_steps} it. x {cfg.apgd_targets} "
            "targets (AutoAttack's white-box pair, without FAB-T and Square; APGD-T only with >= 4 classes)")


@register_attack("apgd", params=("apgd_steps", "apgd_targets"), describe=_describe_apgd)
def _apgd(model, eps, cfg: AttackConfig, num_classes, job, points):
    """APGD-CE then APGD-T on the points still robust. Per point (starts drawn per position, per-point step
    sizes): batches of ``batch_size``, no chunks."""
    return _composite(model, eps, cfg, num_classes, job, points, white_box_only=True, steps=cfg.apgd_steps,
                      targets=cfg.apgd_targets)
