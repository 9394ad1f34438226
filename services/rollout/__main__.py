"""``python -m services.rollout``: run the rollout service until SIGTERM or SIGINT."""

from __future__ import annotations

from services.rollout.service import RolloutService
from services.rollout.settings import RolloutSettings
from shared.runtime import serve


def main() -> None:
    serve(lambda env: RolloutService(RolloutSettings.from_env(env)))


if __name__ == "__main__":
    main()
