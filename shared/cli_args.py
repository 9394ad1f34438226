"""Argument types the ``rtml`` commands of several services share."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime


def parse_time_ms(text: str) -> int:
    """Epoch milliseconds, or an ISO 8601 time (UTC when it names no zone).

    >>> parse_time_ms("1700000000000"), parse_time_ms("2023-11-14T22:13:20"), parse_time_ms("2026-01-01")
    (1700000000000, 1700000000000, 1767225600000)
    """
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is neither epoch ms nor an ISO 8601 time") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)
