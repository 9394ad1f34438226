"""``python -m services.inference``: run the inference service until SIGTERM."""

from __future__ import annotations

import asyncio
import os

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from shared import __version__
from shared.logging import configure_logging
from shared.runtime import run_until_signalled


def main() -> None:
    settings = InferenceSettings.from_env(os.environ)
    configure_logging(service="inference", version=__version__, namespace=settings.common.namespace)
    raise SystemExit(asyncio.run(run_until_signalled(InferenceService(settings))))


if __name__ == "__main__":
    main()
