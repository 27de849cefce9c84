"""The one exception family for bad user input.

Everything a client can get wrong (a name, a version, an index line, a ``.crate`` file) is
reported as :class:`InvalidInput`, so the API layer needs a single ``except`` to turn it into
a 4xx answer, while bugs keep surfacing as other exceptions. The message is a single line that
names the problem and quotes the offending value, because it is shown verbatim to the person
who ran ``cargo publish``.
"""

from __future__ import annotations


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
