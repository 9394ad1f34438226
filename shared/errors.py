"""One error type that crosses NATS request/reply as the micro error headers.

A handler raises ``ServiceError(code, message)``; the runtime turns it into the
``Nats-Service-Error`` / ``Nats-Service-Error-Code`` headers plus a msgpack body
``{"error": {"code", "message"}}``. A client turns such a reply back into the
matching subclass with :func:`raise_for_reply`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class ServiceError(Exception):
    """An error answered to a caller, with an HTTP-like code."""

    code: int = 500

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r})"

    def headers(self) -> dict[str, str]:
        return {ERROR_HEADER: self.message, ERROR_CODE_HEADER: str(self.code)}

    def body(self) -> dict[str, dict[str, int | str]]:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class NotFound(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class Overloaded(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(429, message)


class Unavailable(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message)


class DeadlineExceeded(ServiceError):
    def __init__(self, message: str) -> None:
        super().__init__(504, message)


_BY_CODE: dict[int, Callable[[str], ServiceError]] = {
    400: BadRequest,
    404: NotFound,
    429: Overloaded,
    503: Unavailable,
    504: DeadlineExceeded,
}


def error_from_code(code: int, message: str) -> ServiceError:
    """The typed error for ``code``; a plain ``ServiceError`` for codes without a subclass."""
    cls = _BY_CODE.get(code)
    return cls(message) if cls is not None else ServiceError(code, message)


def raise_for_reply(headers: Mapping[str, str] | None) -> None:
    """Raise the typed error a reply's headers carry; return if it carries none."""
    if not headers or ERROR_CODE_HEADER not in headers:
        return
    raw_code = headers[ERROR_CODE_HEADER]
    try:
        code = int(raw_code)
    except ValueError:
        code = 500
    raise error_from_code(code, headers.get(ERROR_HEADER, f"error code {raw_code}"))
