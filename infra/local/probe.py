"""Protocol-level checks that a server answers at a URL (not just that a port is open)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS


def endpoint_of(url: str, default_port: int) -> Endpoint:
    """Host and port of a server URL.

    >>> endpoint_of("postgresql://postgres@127.0.0.1:5433/rtml", 5432)
    Endpoint(host='127.0.0.1', port=5433)
    >>> endpoint_of("redis://localhost/0", 6379)
    Endpoint(host='localhost', port=6379)
    """
    parts = urlsplit(url)
    return Endpoint(parts.hostname or "127.0.0.1", parts.port or default_port)


def _exchange(endpoint: Endpoint, send: bytes, timeout_s: float) -> bytes:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s) as conn:
        conn.settimeout(timeout_s)
        if send:
            conn.sendall(send)
        return conn.recv(64)


def nats_answers(endpoint: Endpoint, timeout_s: float = 1.0) -> bool:
    """A NATS server greets every connection with an ``INFO`` line."""
    try:
        return _exchange(endpoint, b"", timeout_s).startswith(b"INFO ")
    except OSError:
        return False


def redis_answers(endpoint: Endpoint, timeout_s: float = 1.0) -> bool:
    try:
        reply = _exchange(endpoint, b"PING\r\n", timeout_s)
    except OSError:
        return False
    return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")


def postgres_answers(endpoint: Endpoint, timeout_s: float = 1.0) -> bool:
    """PostgreSQL answers an SSLRequest with one byte, ``S`` or ``N``."""
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    try:
        return _exchange(endpoint, ssl_request, timeout_s)[:1] in (b"S", b"N")
    except OSError:
        return False
