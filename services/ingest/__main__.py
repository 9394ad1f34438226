"""``python -m services.ingest``: read the settings, configure logging, run until signalled."""

from __future__ import annotations

from services.ingest.service import IngestService
from services.ingest.settings import IngestSettings
from shared.runtime import serve


def main() -> None:
    serve(lambda env: IngestService(IngestSettings.from_env(env)))


if __name__ == "__main__":
    main()
