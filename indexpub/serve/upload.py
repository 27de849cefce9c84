"""Reading request bodies without trusting the lengths they declare: cargo's framed upload
(``PUT /api/v1/crates/new``) and small JSON bodies.

Every length a client declares (Content-Length, and the two lengths inside cargo's framing) is
checked against the limits before the bytes it announces are read, so an oversized or lying
upload is refused without buffering it.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from starlette.requests import Request

from indexpub.domain.json_input import load_json
from indexpub.errors import InvalidInput
from indexpub.serve.errors import ApiError

# The longest wait for the next piece of a request body: a client that stalls mid-upload gets
# 408 and loses its connection instead of holding a worker slot and the body's memory forever.
DEFAULT_BODY_TIMEOUT = 30.0


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    if not value.isdigit():
        raise ApiError(400, f"invalid Content-Length header {value[:40]!r}")
    return int(value)


class Body:
    """The request body, read only as far as each step needs.

    A body without Content-Length (chunked) is cut off at ``limit`` (413). Each wait for the
    next chunk is bounded by ``timeout``: a stalled client gets 408, not a slot for ever.
    """

    def __init__(self, request: Request, limit: int, timeout: float) -> None:
        self._chunks = request.stream().__aiter__()
        self._buffer = bytearray()
        self._ended = False
        self._limit = limit
        self._timeout = timeout
        self.received = 0

    async def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted and not self._ended:
            try:
                chunk = await asyncio.wait_for(self._chunks.__anext__(), self._timeout)
            except StopAsyncIteration:
                self._ended = True
                break
            except TimeoutError:
                raise ApiError(
                    408,
                    f"the request body stalled: no data for {self._timeout:g} s after "
                    f"{self.received} bytes",
                ) from None
            self.received += len(chunk)
            if self.received > self._limit:
                raise ApiError(
                    413, f"the request body is larger than the limit of {self._limit} bytes"
                )
            self._buffer += chunk

    async def take(self, size: int) -> bytes | None:
        """The next ``size`` bytes; None when the body ends first."""
        await self._fill(size)
        if len(self._buffer) < size:
            return None
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def rest(self) -> int:
        """How many bytes remain (read to the end, within the limit)."""
        await self._fill(self._limit + 1)
        return len(self._buffer)


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        parsed = load_json(data, what)
    except InvalidInput as exc:  # never a 500, whatever the bytes (deep, huge numbers)
        raise ApiError(400, str(exc)) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, f"{what} must be a JSON object, not {type(parsed).__name__}")
    return parsed


async def read_limited_json(
    request: Request, limit: int, timeout: float, what: str
) -> dict[str, Any]:
    """A whole body of at most ``limit`` bytes, which must be a JSON object."""
    declared = content_length(request)
    if declared is not None and declared > limit:
        raise ApiError(413, f"{what} of {declared} bytes is larger than the limit of {limit}")
    body = Body(request, limit, timeout)
    data = await body.take(await body.rest()) or b""
    return parse_json_object(data, what)


def _publish_limit(max_metadata_bytes: int, max_crate_bytes: int) -> int:
    """The largest publish body: two 4-byte lengths, the JSON and the .crate."""
    return 8 + max_metadata_bytes + max_crate_bytes


def declared_publish_length(
    request: Request, max_metadata_bytes: int, max_crate_bytes: int
) -> int | None:
    """A publish's Content-Length, if it has one; 413 when it is over the limit."""
    limit = _publish_limit(max_metadata_bytes, max_crate_bytes)
    declared = content_length(request)
    if declared is not None and declared > limit:
        raise ApiError(
            413,
            f"the upload of {declared} bytes is larger than the limit of {limit} bytes "
            f"(a .crate file may have at most {max_crate_bytes} bytes)",
        )
    return declared


async def read_publish(
    request: Request,
    declared: int | None,
    *,
    max_metadata_bytes: int,
    max_crate_bytes: int,
    timeout: float,
) -> tuple[dict[str, Any], bytes]:
    """The publish JSON and the .crate of cargo's framing: u32 LE JSON length, the JSON, u32 LE
    .crate length, the .crate. ``declared`` is the Content-Length (see
    :func:`declared_publish_length`)."""
    body = Body(request, _publish_limit(max_metadata_bytes, max_crate_bytes), timeout)
    head = await body.take(4)
    if head is None:
        raise ApiError(
            400,
            f"invalid publish request: a body of {body.received} bytes is too short for "
            "the 4-byte length of the JSON metadata",
        )
    (json_len,) = struct.unpack("<I", head)
    if json_len > max_metadata_bytes:
        raise ApiError(
            413,
            f"the publish metadata (JSON) of {json_len} bytes is larger than the limit of "
            f"{max_metadata_bytes} bytes",
        )
    if declared is not None and 4 + json_len > declared:
        raise ApiError(
            400,
            f"invalid publish request: the JSON length {json_len} reaches past the end of "
            f"the {declared}-byte body",
        )
    meta_bytes = await body.take(json_len)
    if meta_bytes is None:
        raise ApiError(
            400, f"invalid publish request: the body ends inside the {json_len}-byte JSON"
        )
    crate_head = await body.take(4)
    if crate_head is None:
        raise ApiError(
            400,
            f"invalid publish request: the body ends after the JSON ({body.received} bytes "
            "in all), without the 4-byte length of the .crate file",
        )
    (crate_len,) = struct.unpack("<I", crate_head)
    if crate_len > max_crate_bytes:
        raise ApiError(
            413,
            f"the .crate file of {crate_len} bytes is larger than the limit of "
            f"{max_crate_bytes} bytes",
        )
    if declared is not None and 8 + json_len + crate_len > declared:
        raise ApiError(
            400,
            f"invalid publish request: the .crate length {crate_len} reaches past the end "
            f"of the {declared}-byte body",
        )
    crate = await body.take(crate_len)
    if crate is None:
        raise ApiError(
            400, f"invalid publish request: the body ends inside the {crate_len}-byte .crate"
        )
    extra = await body.rest()
    if extra:
        raise ApiError(
            400, f"invalid publish request: {extra} unexpected bytes after the .crate file"
        )
    return parse_json_object(meta_bytes, "the publish metadata"), crate
