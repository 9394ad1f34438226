"""``python -m services.features``: run the features service until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import os
import sys

from services.features.catalog import load_views
from services.features.service import FeaturesService
from services.features.settings import FeaturesSettings
from services.features.views import ViewError
from shared.logging import configure_logging
from shared.runtime import run_until_signalled
from shared.settings import SettingsError


def main() -> None:
    try:
        settings = FeaturesSettings.from_env(os.environ)
        views = load_views(settings.views_path)
    except (SettingsError, ViewError) as error:
        print(f"rtml features: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    configure_logging(
        service=FeaturesService.name,
        version=FeaturesService.version,
        namespace=settings.common.namespace,
        level=os.environ.get("RTML_LOG_LEVEL", "INFO"),
    )
    raise SystemExit(asyncio.run(run_until_signalled(FeaturesService(settings, views))))


if __name__ == "__main__":
    main()
