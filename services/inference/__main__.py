"""``python -m services.inference``: run the inference service until SIGTERM."""

from __future__ import annotations

from services.inference.service import InferenceService
from services.inference.settings import InferenceSettings
from shared.runtime import serve


def main() -> None:
    serve(lambda env: InferenceService(InferenceSettings.from_env(env)))


if __name__ == "__main__":
    main()
