"""``python -m services.rollout``: run the rollout service until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import os

from shared import __version__
from shared.logging import configure_logging
from shared.runtime import run_until_signalled

from .service import RolloutService
from .settings import RolloutSettings


def main() -> None:
    settings = RolloutSettings.from_env(os.environ)
    configure_logging(service="rollout", version=__version__, namespace=settings.common.namespace)
    raise SystemExit(asyncio.run(run_until_signalled(RolloutService(settings))))


if __name__ == "__main__":
    main()
