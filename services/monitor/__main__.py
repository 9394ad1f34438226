"""``python -m services.monitor``: read the settings, configure logging, run until signalled."""

from __future__ import annotations

from services.monitor.service import MonitorService
from services.monitor.settings import MonitorSettings
from shared.runtime import serve


def main() -> None:
    serve(lambda env: MonitorService(MonitorSettings.from_env(env)))


if __name__ == "__main__":
    main()
