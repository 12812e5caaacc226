"""Grid files: a base config, dotted keys with lists of values, exclusions -> one evaluate config per cell.

```yaml
name: mnist1d-capacity          # the sweep's name in the store
base:                           # any keys of an evaluate config
  dataset: mnist1d
  train: {epochs: 40}
grid:                           # dotted keys -> values: the full factorial, in this order
  model_args.channels: [8, 16, 32]
  train.weight_decay: [5.0e-4, 5.0e-3]
  seed: [0, 1]
exclude:                        # partial assignments: every cell that matches one is left out
  - {model_args.channels: 32, train.weight_decay: 5.0e-3}
```

Cells are numbered in the full factorial's order (the grid's key order, the last key varying fastest),
before exclusions, so a cell keeps its number when an exclusion is added or removed.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import os
import re
from dataclasses import MISSING, dataclass, fields, is_dataclass

from .._errors import InputError, NcbenchError

GRID_FILE_KEYS = ("name", "base", "grid", "exclude", "note")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_FREE = "free"  # a section whose sub-keys are checked by build_config (model_args, dataset_args)


@dataclass(frozen=True)
class SweepJob:
    """One cell of a grid.

    cell : position in the full factorial (0-based, exclusions not renumbered).
    axes : ``{dotted key: value}`` of this cell, in grid order.
    config : the evaluate config (a plain dict, as a YAML file would hold it): ``base`` with the cell's values.
    """

    cell: int
    axes: dict
    config: dict


@dataclass(frozen=True)
class Sweep:
    """An expanded grid: its name, its axes in order, and one job per remaining cell.

    n_cells : cells of the full factorial; ``n_cells - len(jobs)`` were excluded.
    """

    name: str
    axes: tuple[str, ...]
    jobs: tuple[SweepJob, ...]
    base: dict
    n_cells: int
    source: str | None = None
    note: str = ""  # the grid file's ``note``: what its results are for (shown on its measures board)


def config_sections() -> dict[str, object]:
    """The evaluate config's fields, each mapped to its sub-fields: a list (a dataclass section such as
    ``train``), ``"free"`` (a mapping whose keys the model or dataset defines) or None (a single value)."""
    from ..config import EvaluateConfig

    out: dict[str, object] = {}
    for f in fields(EvaluateConfig):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            out[f.name] = [g.name for g in fields(default)]
        elif isinstance(default, dict):
            out[f.name] = _FREE
        else:
            out[f.name] = None
    return out


def valid_keys(sections: dict | None = None) -> list[str]:
    """Every grid key a grid may name: single fields (``seed``), ``<section>.<field>`` (``train.weight_decay``),
    and ``<section>.<argument>`` placeholders for the free sections (``model_args.<argument>``)."""
    sections = sections if sections is not None else config_sections()
    keys = [k for k, v in sections.items() if v is None or v == _FREE]
    keys += [f"{k}.{f}" for k, v in sections.items() if isinstance(v, list) for f in v]
    keys += [f"{k}.<argument>" for k, v in sections.items() if v == _FREE]
    return sorted(keys)


LIST_KEYS_HINT = "`ncbench sweep --list-keys` lists the valid ones"


def check_key(key, sections: dict | None = None, where: str = "") -> None:
    """Refuse a grid key that names no evaluate-config field, in one short line: the file (``where``), the key,
    its close matches, and where the valid keys are listed."""
    sections = sections if sections is not None else config_sections()
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise InputError(f"{where}grid keys are dotted config keys such as train.weight_decay; got {key!r}")
    parts = key.split(".")
    top, kind = parts[0], sections.get(parts[0], MISSING)
    if kind is not MISSING:
        if len(parts) == 1 or kind == _FREE:
            return
        if kind is None:
            raise InputError(f"{where}grid key {key!r}: {top!r} is a single value, it has no fields (write "
                             f"{top}: [...])")
        if len(parts) == 2 and parts[1] in kind:
            return
    candidates = [k for k in valid_keys(sections) if "<" not in k]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    if not close and isinstance(kind, list):  # a known section: its own fields are the likely ones
        close = difflib.get_close_matches(key, [f"{top}.{f}" for f in kind], n=3, cutoff=0.3)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise InputError(f"{where}unknown grid key {key!r}{hint}; {LIST_KEYS_HINT}")


def _assign(config: dict, key: str, value) -> None:
    """Set ``config[a][b]... = value`` for ``key = "a.b..."``, copying the mappings on the way."""
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        sub = node.get(part)
        if sub is None:
            sub = {}
        elif not isinstance(sub, dict):
            raise InputError(f"grid key {key!r}: base sets {'.'.join(parts[:i + 1])} to {sub!r}, which is not a "
                             "mapping")
        else:
            sub = dict(sub)
        node[part] = sub
        node = sub
    node[parts[-1]] = copy.deepcopy(value)


def format_axes(axes: dict) -> str:
    return "{" + ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in axes.items()) + "}"


def _looks_numeric(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def expand_grid(grid) -> Sweep:
    """Expand a grid file (path) or its parsed mapping into one validated job per cell.

    Every cell's config is checked with :func:`ncbench.config.build_config`; a bad value names its cell.

    Raises
    ------
    InputError
        A key outside name/base/grid/exclude; a missing or malformed name; an unknown grid key (the valid
        ones are named); a grid value that is not a non-empty list of distinct values; keys that overlap
        (``model_args`` and ``model_args.width``); an exclusion over keys that are not axes or that matches
        no cell; a cell whose config does not validate ("cell 7 {model_args.channels: -1, seed: 0}: ...").
    """
    from ..config import build_config, load_yaml

    source = None
    if isinstance(grid, (str, os.PathLike)):
        source = str(grid)
        data = load_yaml(grid)
    elif isinstance(grid, dict):
        data = grid
    else:
        raise InputError(f"a grid is a YAML file path or a mapping; got {type(grid).__name__}")
    where = f"{source}: " if source else ""
    unknown = sorted(set(map(str, data)) - set(GRID_FILE_KEYS))
    if unknown:
        raise InputError(f"{where}unknown key(s) {unknown} in the grid file; valid keys: {list(GRID_FILE_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(f"{where}the grid needs a name: letters, digits, '.', '_' or '-' (it names the sweep in "
                         f"the store and a folder); got {name!r}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise InputError(f"{where}base must be a mapping of evaluate-config keys; got {type(base).__name__}")
    spec = data.get("grid") or {}
    if not isinstance(spec, dict):
        raise InputError(f"{where}grid must be a mapping of dotted keys to lists of values; got "
                         f"{type(spec).__name__}")
    sections = config_sections()
    axes = list(spec)
    for key in axes:
        check_key(key, sections, where)
        values = spec[key]
        if not isinstance(values, list) or not values:
            raise InputError(f"{where}grid key {key!r} needs a non-empty list of values (write {key}: [value, ...]); "
                             f"got {values!r}")
        for i, v in enumerate(values):
            if any(v == w and isinstance(v, bool) == isinstance(w, bool) for w in values[:i]):
                raise InputError(f"{where}grid key {key!r} lists the value {v!r} twice")
    for a in axes:
        for b in axes:
            if a != b and b.startswith(a + "."):
                raise InputError(f"{where}grid keys {a!r} and {b!r} overlap: give one or the other")
    exclude = data.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(e, dict) and e for e in exclude):
        raise InputError(f"{where}exclude must be a list of non-empty mappings (partial assignments such as "
                         f"{{{axes[0] if axes else 'seed'}: 0}}); got {exclude!r}")
    for i, entry in enumerate(exclude):
        bad = [k for k in entry if k not in axes]
        if bad:
            raise InputError(f"{where}exclude entry {i + 1} names {bad}, which are not grid keys; the grid's keys are "
                             f"{axes}")
    used = [0] * len(exclude)
    jobs = []
    n_cells = math.prod(len(spec[k]) for k in axes)
    # YAML 1.1 reads 5e-4 (no dot) as a string: an axis value that is a number in a string is that number,
    # so that the frame's axis column holds numbers (and the config is coerced the same way)
    spec = {k: [float(v) if _looks_numeric(v) else v for v in spec[k]] for k in axes}
    for cell, values in enumerate(itertools.product(*(spec[k] for k in axes))):
        cell_axes = dict(zip(axes, values))
        hit = [i for i, entry in enumerate(exclude) if _same(cell_axes, entry)]
        for i in hit:
            used[i] += 1
        if hit:
            continue
        config = copy.deepcopy(base)
        for key, value in cell_axes.items():
            _assign(config, key, value)
        try:
            build_config(config)
        except (NcbenchError, TypeError, ValueError) as err:
            raise InputError(f"{where}cell {cell} {format_axes(cell_axes)}: {err}") from None
        jobs.append(SweepJob(cell, cell_axes, config))
    unused = [i for i, n in enumerate(used) if n == 0]
    if unused:
        entry = exclude[unused[0]]
        raise InputError(f"{where}exclude entry {unused[0] + 1} {format_axes(entry)} matches no cell of the grid "
                         "(check its values against the grid's)")
    if not jobs:
        raise InputError(f"{where}every cell of the grid is excluded: nothing to run")
    note = data.get("note") or ""
    if not isinstance(note, str):
        raise InputError(f"{where}note must be text (what the grid's results are for); got {type(note).__name__}")
    return Sweep(name=name, axes=tuple(axes), jobs=tuple(jobs), base=copy.deepcopy(base), n_cells=n_cells,
                 source=source, note=" ".join(note.split()))


def _same(axes: dict, assignment: dict) -> bool:
    """True when the cell takes every value of the assignment (True is not 1, as YAML means them apart)."""
    for key, value in assignment.items():
        have = axes[key]
        if isinstance(have, bool) != isinstance(value, bool) or have != value:
            return False
    return True

