"""A small registry by decorator, in the manner of timm's ``@register_model``.

>>> reg = Registry("widget")
>>> @reg.register("round")
... def make_round(): return "o"
>>> reg.get("round")()
'o'
>>> reg.names()
['round']
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Callable, Generic, TypeVar

from ._errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to factories. Unknown names list the close matches; duplicate names raise."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names())
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (valid: {valid})"

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._items if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items
