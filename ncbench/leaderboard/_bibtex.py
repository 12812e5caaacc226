"""Paper metadata from a BibTeX file holding exactly one entry.

A small parser of the BibTeX grammar that matters here: ``@type{key, field = value, ...}`` (or round
brackets), values in braces (nested), in double quotes, bare numbers, the month macros (``jan`` ... ``dec``),
and ``#`` concatenation. Text outside entries and ``@comment``/``@preamble`` are skipped as BibTeX does;
``@string`` macros are refused (write the value in the field). Nothing is guessed: a file with no entry or
with several is refused, and so is anything the grammar does not allow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .._errors import InputError

_MONTHS = {m[:3].lower(): m for m in ("January", "February", "March", "April", "May", "June", "July", "August",
                                      "September", "October", "November", "December")}
_START = re.compile(r"@\s*([A-Za-z]+)\s*([{(])")
_KEY = re.compile(r"\s*([^\s,{}()\"#%'=]+)\s*(,|$)")
_FIELD = re.compile(r"\s*([A-Za-z][\w\-:.+]*)\s*=\s*")
_AND = re.compile(r"\s+and\s+", re.IGNORECASE)


class _Text:
    """The file's text with its name, for messages that give a line number."""

    def __init__(self, text: str, name: str) -> None:
        self.text, self.name = text, name

    def error(self, pos: int, what: str) -> InputError:
        line = self.text.count("\n", 0, pos) + 1
        return InputError(f"{self.name}, line {line}: {what}")


def _close_brace(src: _Text, pos: int) -> int:
    """Index of the ``}`` that closes the ``{`` just before ``pos``."""
    depth, text = 1, src.text
    for i in range(pos, len(text)):
        if text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif text[i] == "}" and (i == 0 or text[i - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return i
    raise src.error(pos - 1, "unbalanced braces: this '{' is never closed")


def _close_paren(src: _Text, pos: int) -> int:
    depth, text = 0, src.text
    for i in range(pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
        elif text[i] == ")" and depth == 0:
            return i
    raise src.error(pos - 1, "this '(' is never closed")


def _value(src: _Text, pos: int, end: int) -> tuple[str, int]:
    """One field value (parts joined by ``#``) starting at ``pos``; returns the raw text and the next index."""
    text, parts = src.text, []
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            raise src.error(pos, "a field value is missing after '='")
        ch = text[pos]
        if ch == "{":
            close = _close_brace(src, pos + 1)
            if close >= end:
                raise src.error(pos, "unbalanced braces in a field value")
            parts.append(text[pos + 1:close])
            pos = close + 1
        elif ch == '"':
            depth, i = 0, pos + 1
            while i < end and not (text[i] == '"' and depth == 0):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            if i >= end:
                raise src.error(pos, 'a quoted value is never closed with "')
            parts.append(text[pos + 1:i])
            pos = i + 1
        else:
            m = re.compile(r"[A-Za-z0-9_.:+-]+").match(text, pos)
            if not m:
                raise src.error(pos, f"expected a value in braces, in quotes or a number; got {text[pos]!r}")
            word = m.group(0)
            if word.isdigit():
                parts.append(word)
            elif word.lower() in _MONTHS:
                parts.append(_MONTHS[word.lower()])
            else:
                raise src.error(pos, f"undefined macro {word!r}: write the value in braces")
            pos = m.end()
        while pos < end and text[pos].isspace():
            pos += 1
        if pos < end and text[pos] == "#":
            pos += 1
            continue
        return "".join(parts), pos


def _fields(src: _Text, pos: int, end: int) -> dict[str, str]:
    text, out = src.text, {}
    while True:
        while pos < end and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= end:
            return out
        m = _FIELD.match(text, pos, end)
        if not m:
            raise src.error(pos, f"expected 'name = value'; got {text[pos:pos + 20]!r}")
        name = m.group(1).lower()
        if name in out:
            raise src.error(pos, f"field {name!r} appears twice")
        out[name], pos = _value(src, m.end(), end)
        if pos < end and text[pos] != ",":
            raise src.error(pos, f"expected ',' after field {name!r}; got {text[pos]!r}")


def parse_bibtex(text: str, *, name: str = "<bibtex>") -> list[dict]:
    """All entries of ``text`` as ``{"type", "key", "fields" (raw values, names lower-cased), "raw"}``."""
    src, out, i = _Text(text, name), [], 0
    while True:
        at = text.find("@", i)
        if at < 0:
            return out
        m = _START.match(text, at)
        if not m:  # an '@' in free text between entries: BibTeX ignores it
            i = at + 1
            continue
        kind = m.group(1).lower()
        end = _close_brace(src, m.end()) if m.group(2) == "{" else _close_paren(src, m.end())
        i = end + 1
        if kind in ("comment", "preamble"):
            continue
        if kind == "string":
            raise src.error(at, "@string macros are not supported: write each value in its field")
        k = _KEY.match(text, m.end(), end)
        if not k:
            raise src.error(m.end(), "expected the entry's citation key, then ','")
        out.append({"type": kind, "key": k.group(1), "fields": _fields(src, k.end(), end),
                    "raw": text[at:end + 1]})


def _plain(value: str) -> str:
    """A field's text without BibTeX's protective braces and with single spaces."""
    return " ".join(re.sub(r"(?<!\\)[{}]", "", value).split())


def _split_authors(value: str) -> list[str]:
    names, start = [], 0
    for m in _AND.finditer(value):
        before = value[:m.start()]
        if before.count("{") - before.count("}") == 0:
            names.append(value[start:m.start()])
            start = m.end()
    names.append(value[start:])
    return [n for n in (_plain(x) for x in names) if n]


def paper_from_entry(entry: dict, *, name: str = "<bibtex>") -> dict:
    """The leaderboard's ``paper`` object from one parsed entry (:func:`parse_bibtex`)."""
    f = entry["fields"]
    title = _plain(f.get("title", ""))
    if not title:
        raise InputError(f"{name}: entry {entry['key']!r} has no title")
    year = _plain(f["year"]) if "year" in f else None
    if year is not None and not re.fullmatch(r"[0-9]{4}", year):
        raise InputError(f"{name}: entry {entry['key']!r} has year {year!r}; expected four digits such as 2020")
    venue = next((_plain(f[k]) for k in ("journal", "booktitle") if k in f), None)
    url = _plain(f["url"]) if "url" in f else None
    if url is None and "doi" in f:
        url = "https://doi.org/" + re.sub(r"^https?://(dx\.)?doi\.org/", "", _plain(f["doi"]))
    if url is None and "eprint" in f and _plain(f.get("archiveprefix", "")).lower() == "arxiv":
        url = "https://arxiv.org/abs/" + _plain(f["eprint"])
    return {"title": title, "authors": _split_authors(f.get("author", "")), "venue": venue or None,
            "year": int(year) if year else None, "url": url or None, "bibtex_key": entry["key"],
            "bibtex": entry["raw"].strip()}


def read_bibtex(path: str | os.PathLike) -> dict:
    """The paper metadata of the single BibTeX entry in ``path``.

    Returns
    -------
    dict with ``title`` (protective braces removed), ``authors`` (list, as written in ``author``, split on
    "and"), ``venue`` (``journal`` or else ``booktitle``; None if neither), ``year`` (int or None), ``url``
    (``url``, else ``https://doi.org/<doi>``, else the arXiv abstract of an arXiv ``eprint``; None if none),
    ``bibtex_key`` and ``bibtex`` (the entry's text as written): the ``paper`` object of an entry.

    Raises
    ------
    InputError : the file cannot be read, is not valid BibTeX, holds no entry or more than one, or the entry
        has no title.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read BibTeX file {path}: {err}") from None
    entries = parse_bibtex(text, name=str(path))
    if len(entries) != 1:
        keys = ", ".join(e["key"] for e in entries)
        raise InputError(f"{path} holds {len(entries)} BibTeX entries{f' ({keys})' if keys else ''}; give a file "
                         "with exactly one (the paper of this model)")
    return paper_from_entry(entries[0], name=str(path))
