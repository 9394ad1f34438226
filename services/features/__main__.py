"""``python -m services.features``: run the features service until SIGTERM/SIGINT."""

from __future__ import annotations

from collections.abc import Mapping

from services.features.catalog import load_views
from services.features.service import FeaturesService
from services.features.settings import FeaturesSettings
from shared.runtime import serve


def build(env: Mapping[str, str]) -> FeaturesService:
    settings = FeaturesSettings.from_env(env)
    return FeaturesService(settings, load_views(settings.views_path))


def main() -> None:
    serve(build)


if __name__ == "__main__":
    main()
