"""The error an HTTP simulator's device raises for an API refusal; its interface turns it into a JSON answer."""

from __future__ import annotations

from typing import Any


class DeviceApiError(Exception):
    """An API refusal: HTTP status, the device's error code, a message, optional details and headers."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}
