"""The one exception family for bad user input.

Everything a client can get wrong (a name, a version, an index line, a ``.crate`` file) is
reported as :class:`InvalidInput`, so the API layer needs a single ``except`` to turn it into
a 4xx answer, while bugs keep surfacing as other exceptions. The message is a single line that
names the problem and quotes the offending value, because it is shown verbatim to the person
who ran ``cargo publish``; :func:`shorten` keeps a quoted value short whatever its size.
"""

from __future__ import annotations


def shorten(value: object, limit: int = 80) -> str:
    """repr() of a value, cut so that a huge bad input still gives a readable message.

    A long string is cut before repr() so that a 40 MiB name costs no 40 MiB copy, and a value
    repr() cannot show (nested too deeply, an int of too many digits) is named by its type.
    """
    if isinstance(value, str | bytes) and len(value) > limit:
        value = value[:limit]
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidInput(ValueError):
    """Bad user input; ``str(exc)`` is one line naming the problem and the value."""

    def __init__(self, message: str) -> None:
        # Keep the promise of one line even when a value smuggles in a newline.
        super().__init__(" ".join(message.splitlines()))

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidName(InvalidInput):
    """A crate, dependency or feature name that cargo or the registry would refuse."""


class InvalidVersion(InvalidInput):
    """A version or version requirement that cargo's semver parser would refuse."""


class InvalidEntry(InvalidInput):
    """An index entry (one JSON line) that cargo would skip or call invalid."""


class InvalidCrateFile(InvalidInput):
    """A ``.crate`` archive that is unreadable, unsafe or does not match its manifest."""
