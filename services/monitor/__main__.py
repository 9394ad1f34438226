"""``python -m services.monitor``: read the settings, configure logging, run until signalled."""

from __future__ import annotations

import asyncio
import os

from services.monitor.service import MonitorService
from services.monitor.settings import MonitorSettings
from shared import __version__
from shared.logging import configure_logging
from shared.runtime import run_until_signalled


def main() -> None:
    settings = MonitorSettings.from_env(os.environ)
    configure_logging(
        service="monitor", version=__version__, namespace=settings.common.namespace,
        level=os.environ.get("RTML_LOG_LEVEL", "INFO"),
    )  # fmt: skip
    raise SystemExit(asyncio.run(run_until_signalled(MonitorService(settings))))


if __name__ == "__main__":
    main()
