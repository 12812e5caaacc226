"""Settings as the types they are declared with, at the boundary.

One computation must have one identity: a weight decay written ``0`` and one written ``0.0``, or ``5e-4``
(which YAML reads as a *string*) and ``0.0005``, are the same setting. Config dataclasses and the keyword
arguments of datasets and models are coerced to their declared types here, with a message that names the
field when a value cannot be.

>>> coerce_value(0, "float", "weight_decay"), coerce_value("5e-4", "float", "weight_decay")
(0.0, 0.0005)
>>> coerce_value(60.0, "int", "epochs"), coerce_value(None, "int | None", "n_train")
(60, None)
"""

from __future__ import annotations

import dataclasses
import inspect
import math

from ._errors import InputError

_SIMPLE = ("int", "float", "bool", "str")
#: the numeric precisions of training and of an attack's forwards (one list, shared; here because both config
#: sections import this module and nothing else in common)
PRECISIONS = ("fp32", "bf16")


def _kinds(annotation) -> tuple[str, bool] | None:
    """('int' | 'float' | 'bool' | 'str', optional) for a simple annotation, else None."""
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", str(annotation))
    parts = [p.strip() for p in annotation.split("|")]
    optional = "None" in parts
    rest = [p for p in parts if p != "None"]
    if len(rest) == 1 and rest[0] in _SIMPLE:
        return rest[0], optional
    return None


def coerce_value(value, annotation, name: str):
    """``value`` as the type ``annotation`` names (``"float"``, ``"int | None"``, ...); other annotations and
    values that already fit pass through unchanged."""
    kinds = _kinds(annotation)
    if kinds is None:
        return value
    kind, optional = kinds
    if value is None:
        if optional:
            return None
        raise InputError(f"{name} must be a {kind}; got None")
    if kind == "str":
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise InputError(f"{name} must be true or false; got {value!r}")
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number; got {value!r}")
    number = value
    if isinstance(value, str):  # YAML reads 5e-4 (no dot) as a string
        try:
            number = float(value.strip())
        except ValueError:
            raise InputError(f"{name} must be a number; got {value!r}") from None
    if not isinstance(number, (int, float)):
        raise InputError(f"{name} must be a number; got {type(value).__name__} {value!r}")
    if kind == "float":
        return float(number)
    if isinstance(number, float):
        if not math.isfinite(number) or number != int(number):
            raise InputError(f"{name} must be an integer; got {value!r}")
        return int(number)
    return int(number)


def coerce_dataclass(obj, where: str) -> None:
    """Coerce a (frozen) dataclass's fields in place to their declared simple types."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        new = coerce_value(value, f.type, f"{where}.{f.name}")
        if new is not value:
            object.__setattr__(obj, f.name, new)


def coerce_kwargs(func, given: dict, where: str) -> dict:
    """``given`` keyword arguments of ``func`` coerced to its annotations (or, unannotated, to the type of the
    default when that is an int or a float)."""
    params = inspect.signature(func).parameters
    out = {}
    for key, value in given.items():
        p = params.get(key)
        if p is None:
            out[key] = value
            continue
        annotation = p.annotation
        if annotation is inspect.Parameter.empty:
            default = p.default
            annotation = type(default).__name__ if isinstance(default, (int, float)) and not isinstance(default, bool) \
                else None
        out[key] = value if annotation is None else coerce_value(value, annotation, f"{where} {key}")
    return out
