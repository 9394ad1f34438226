"""The demo process's own log lines go to the service log file, so the terminal shows the story alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import structlog


def _prefix(_: Any, __: str, rendered: Any) -> str:
    """After the JSON renderer: mark the line as the demo's, as the supervisor marks each service's."""
    return f"[demo] {rendered}"


def route_logs(path: Path) -> None:
    """structlog (JSON) and stdlib logging (warnings and up) of this process, appended to ``path``."""
    handle = path.open("a", buffering=1)  # lives as long as the process
    logging.basicConfig(stream=handle, level=logging.WARNING, format="[demo] %(name)s %(message)s", force=True)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
            _prefix,
        ],
        logger_factory=structlog.WriteLoggerFactory(file=handle),
        cache_logger_on_first_use=False,
    )
