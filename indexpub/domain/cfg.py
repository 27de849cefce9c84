"""Dependency platforms: cargo's ``cfg()`` expressions and target triples.

cargo refuses an entry whose dependency target does not parse, so a balanced-parentheses check
is not enough; and on publish cargo sends the *displayed* form, which is what a ``.crate``
file's manifest must be turned into.
"""

from __future__ import annotations

import re
import string

from indexpub.domain.checks import expect_str, refuse
from indexpub.errors import shorten

_TRIPLE_RE = re.compile(r"[A-Za-z0-9_.-]+")
_ASCII_LETTERS = frozenset(string.ascii_letters)
_ASCII_DIGITS = frozenset(string.digits)


class _CfgParser:
    """Parses cargo's ``cfg()`` expressions and prints them the way cargo displays them."""

    def __init__(self, text: str) -> None:
        self.tokens = _cfg_tokens(text)
        self.pos = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self, expected: str) -> tuple[str, str]:
        token = self._peek()
        if token is None:
            raise _CfgError(f"expected {expected}, found the end of the expression")
        self.pos += 1
        return token

    def _eat(self, kind: str) -> None:
        token = self._next(repr(kind))
        if token[0] != kind:
            raise _CfgError(f"expected {kind!r}, found {token[1]!r}")

    def _try(self, kind: str) -> bool:
        token = self._peek()
        if token is not None and token[0] == kind:
            self.pos += 1
            return True
        return False

    def parse(self) -> str:
        expr = self.expr()
        token = self._peek()
        if token is not None:
            raise _CfgError(f"unexpected {token[1]!r} after the expression")
        return expr

    def expr(self) -> str:
        token = self._peek()
        if token is not None and token[0] == "ident" and token[1] in ("all", "any"):
            self.pos += 1
            self._eat("(")
            items: list[str] = []
            while not self._try(")"):
                items.append(self.expr())
                if not self._try(","):
                    self._eat(")")
                    break
            return f"{token[1]}({', '.join(items)})"
        if token is not None and token[0] == "ident" and token[1] == "not":
            self.pos += 1
            self._eat("(")
            inner = self.expr()
            self._eat(")")
            return f"not({inner})"
        return self.cfg()

    def cfg(self) -> str:
        kind, name = self._next("an identifier")
        if kind != "ident":
            raise _CfgError(f"expected an identifier, found {name!r}")
        if not self._try("="):
            return name
        kind, value = self._next("a string")
        if kind != "str":
            raise _CfgError(f"expected a string after '{name} =', found {value!r}")
        if not value.isprintable():
            raise _CfgError(f"unprintable characters in the string {value!r}")
        return f'{name} = "{value}"'


class _CfgError(Exception):
    """A cfg expression problem; turned into InvalidEntry with the whole target quoted."""


def _is_ident_start(char: str) -> bool:
    return char == "_" or char in _ASCII_LETTERS


def _is_ident_rest(char: str) -> bool:
    return _is_ident_start(char) or char in _ASCII_DIGITS


def _cfg_tokens(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == " ":
            i += 1
        elif char in "(),=":
            tokens.append((char, char))
            i += 1
        elif char == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _CfgError("unterminated string")
            tokens.append(("str", text[i + 1 : end]))
            i = end + 1
        elif _is_ident_start(char):
            start = i
            if text.startswith("r#", i) and i + 2 < len(text) and _is_ident_start(text[i + 2]):
                i += 2
            i += 1
            while i < len(text) and _is_ident_rest(text[i]):
                i += 1
            tokens.append(("ident", text[start:i]))
        else:
            raise _CfgError(f"unexpected character {char!r}")
    return tokens


def normalize_target(value: object, *, what: str = "target") -> str:
    """A dependency's platform (``cfg(...)`` or a target triple) in cargo's display form."""
    text = expect_str(value, what)
    if text.startswith("cfg(") and text.endswith(")"):
        try:
            return f"cfg({_CfgParser(text[4:-1]).parse()})"
        except _CfgError as problem:
            refuse(f"invalid {what} {shorten(text)}: {problem}")
    if "(" in text:
        refuse(f"invalid {what} {shorten(text)}: a cfg expression must look like cfg(...)")
    if not _TRIPLE_RE.fullmatch(text):
        refuse(f"invalid {what} {shorten(text)}: expected cfg(...) or a target triple")
    return text


def validate_target(value: object, *, what: str = "target") -> str:
    """Return ``value`` unchanged when cargo can parse it as a dependency platform."""
    normalize_target(value, what=what)
    assert isinstance(value, str)
    return value
