"""Refusals of the HTTP API, and the shape cargo prints them in."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse, Response


class ApiError(Exception):
    """A refusal with its HTTP status; ``detail`` is shown to the person who ran cargo."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    """cargo's error shape: it prints every ``detail``, whatever the status."""
    return JSONResponse({"errors": [{"detail": detail}]}, status_code=status, headers=headers)
