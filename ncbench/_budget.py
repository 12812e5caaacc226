"""Attack budgets as numbers that compare equal, and as labels people read.

A budget written as ``8/255`` in one config and ``0.03137254901960784`` in another is the same budget: both are
stored as the same float (:func:`canonical_eps`, 10 significant digits) and shown with the same label
(:func:`eps_label`: ``"8/255"``). Record fields, frame columns (``robust_accuracy@8/255``) and leaderboard
tables all go through these two functions.

>>> canonical_eps("8/255") == canonical_eps(8 / 255) == canonical_eps(0.031372549019607)
True
>>> eps_label(8 / 255), eps_label(0.01), eps_label("0.5"), eps_label(0)
('8/255', '0.01', '0.5', '0')
"""

from __future__ import annotations

import math
from fractions import Fraction

from ._errors import InputError

SIGNIFICANT_DIGITS = 10


def canonical_eps(value) -> float:
    """``value`` (a number, or a string such as ``"0.03"`` or ``"8/255"``) as a float rounded to 10 significant
    digits, so that two spellings of one budget give the same float."""
    if isinstance(value, bool):
        raise InputError(f"eps must be a number; got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(Fraction(text)) if "/" in text else float(text)
        except (ValueError, ZeroDivisionError):
            raise InputError(f"eps must be a number or a fraction such as 8/255; got {value!r}") from None
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        raise InputError(f"eps must be a number; got {type(value).__name__} {value!r}")
    if not math.isfinite(number) or number < 0:
        raise InputError(f"eps must be a finite number >= 0; got {value!r}")
    return float(f"{number:.{SIGNIFICANT_DIGITS}g}")


def eps_label(value) -> str:
    """A short, exact label: ``"0.01"`` for decimals of up to 6 significant digits, ``"k/255"`` for multiples
    of 1/255 (the image budgets of the literature), otherwise the canonical float."""
    x = canonical_eps(value)
    short = f"{x:g}"
    if float(short) == x:
        return short
    k = round(x * 255)
    if k and canonical_eps(k / 255) == x:
        return f"{k}/255"
    return repr(x)
