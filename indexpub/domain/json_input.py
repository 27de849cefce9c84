"""Decoding JSON that comes from outside: index lines and the JSON a client sends.

``json.loads`` accepts what serde_json refuses (``NaN``, integers of any size, duplicate keys)
and raises more than JSONDecodeError: RecursionError for deep nesting and a plain ValueError for
an integer of thousands of digits. Here integers are kept to 64 bits and floats finite, as
serde_json reads them for cargo and crates.io, and every problem becomes one short line.
"""

from __future__ import annotations

import json
import math
from typing import NoReturn

from indexpub.domain.checks import refuse
from indexpub.errors import shorten


def load_json(data: str | bytes, what: str) -> object:
    """JSON from a client, or InvalidEntry with one short line whatever the bytes hold."""
    try:
        return decode_json(data)
    except json.JSONDecodeError as problem:
        refuse(f"{what} is not valid JSON: {problem.msg} (line {problem.lineno})")
    except UnicodeDecodeError:
        refuse(f"{what} is not valid JSON: not UTF-8")
    except RecursionError:
        refuse(f"{what} is not valid JSON: nested too deeply")


def decode_json(data: str | bytes, *, refuse_duplicate_keys: bool = False) -> object:
    """``json.loads`` with serde_json's number rules, for callers that word their own errors.

    An out-of-range number, a ``NaN`` or ``Infinity`` constant and (when asked) a key given
    twice raise InvalidEntry; text that is not JSON raises what ``json.loads`` raises
    (JSONDecodeError, UnicodeDecodeError, RecursionError).
    """
    return json.loads(
        data,
        object_pairs_hook=_no_duplicate_keys if refuse_duplicate_keys else None,
        parse_constant=_no_constants,
        parse_int=_json_int,
        parse_float=_json_float,
    )


def _json_int(text: str) -> int:
    value = int(text) if len(text) <= 20 else None
    if value is None or not -(2**63) <= value < 2**64:
        refuse(f"invalid JSON: the integer {shorten(text, 30)} is out of range")
    return value


def _json_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        refuse(f"invalid JSON: the number {shorten(text, 30)} is out of range")
    return value


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Python keeps the last duplicate where cargo's serde refuses the line: refuse too.
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            refuse(f"invalid index line: duplicate key {key!r}")
        data[key] = value
    return data


def _no_constants(name: str) -> NoReturn:
    refuse(f"invalid JSON: {name} is not valid JSON")
