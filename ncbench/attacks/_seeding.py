"""Randomness fixed by the job: every random number an attack draws for a point depends on named facts only.

The rule (docs/attacks.md, "Seeding"): a point's random start is a function of the job's ``seed``, the attack
(or component) name, its norm and own settings, the budget, the restart (and APGD-T's target), and the
point's *position* in the evaluation set. Nothing else: not ``n_points``, not the grid below the budget, not
the batch size, not what ran earlier in the process.

How: positions are cut into fixed chunks of :data:`CHUNK` points (0-255, 256-511, ...). Each chunk has its own
``torch.Generator``, seeded by the sha256 of the facts and the chunk index (:func:`derive_seed`), which always
draws the noise of the *whole* chunk; a point takes its row. So a point's noise is the same whichever of its
chunk-mates are attacked with it.

Attacks whose randomness is shared by a batch (torchattacks' Square draws one window position per iteration
for all its points) cannot be made per point; they run on the fixed chunks themselves, each seeded from the
facts and the chunk index (:func:`chunks_of`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator

import torch

#: points per chunk of positions: the unit of noise drawing, and the batch of the attacks seeded per batch
CHUNK = 256


def derive_seed(facts: dict) -> int:
    """A 63-bit seed that depends on ``facts`` (a JSON-able dict) and nothing else: the first 8 bytes of the
    sha256 of their canonical JSON (sorted keys, floats as Python writes them)."""
    from ..identity import canonical_json

    return int.from_bytes(hashlib.sha256(canonical_json(facts).encode()).digest()[:8], "big") >> 1


def attack_facts(seed: int, attack: str, norm: str, eps: float, params: dict, **more) -> dict:
    """The facts an attack's random numbers depend on: the job's seed, the attack (or component) name, norm,
    budget and own settings, plus ``more`` (restart, target)."""
    return {"seed": int(seed), "attack": attack, "norm": norm, "eps": float(eps), "params": dict(params), **more}


def point_noise(facts: dict, positions: torch.Tensor,
                draw: Callable[[torch.Generator], tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """Per point, its rows of the noise of its chunk.

    Parameters
    ----------
    facts : dict
        What the noise depends on (job seed, attack, norm, settings, budget, restart); the chunk index is added.
    positions : (B,) int tensor
        The points' positions in the evaluation set.
    draw : generator -> tuple of tensors
        Draws the noise of one whole chunk, each tensor with leading dimension :data:`CHUNK`, from the generator
        (in a fixed order: several tensors come from one generator in sequence).

    Returns
    -------
    tuple of tensors, each (B, ...) on the CPU, row i for ``positions[i]``.
    """
    pos = positions.detach().cpu().long()
    chunk = pos // CHUNK
    out: list[torch.Tensor] | None = None
    for c in chunk.unique().tolist():
        parts = draw(torch.Generator().manual_seed(derive_seed({**facts, "chunk": int(c)})))
        if out is None:
            out = [torch.empty((pos.numel(), *p.shape[1:]), dtype=p.dtype) for p in parts]
        rows = (chunk == c).nonzero().flatten()
        for o, p in zip(out, parts):
            o[rows] = p[pos[rows] % CHUNK]
    if out is None:  # no points: draw nothing, return empty tensors of the right trailing shape
        return tuple(p[:0] for p in draw(torch.Generator().manual_seed(0)))
    return tuple(out)


def chunks_of(idx: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(chunk index, positions)`` for the positions ``idx`` (ascending) grouped by fixed chunk of positions."""
    chunk = torch.div(idx, CHUNK, rounding_mode="floor")
    for c in chunk.unique().tolist():
        yield int(c), idx[chunk == c]


@contextlib.contextmanager
def preserved_global_rng(device: torch.device):
    """Restore torch's global random state (CPU, and ``device`` if CUDA) on exit: torchattacks' components call
    ``torch.random.manual_seed``, which would otherwise change every random number drawn after an attack."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
