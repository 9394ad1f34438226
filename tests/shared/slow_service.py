"""A service with one slow endpoint, run as a subprocess by the shutdown test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any, ClassVar

from shared.logging import configure_logging
from shared.runtime import Endpoint, Request, Service, run_until_signalled
from shared.settings import CommonSettings


class SlowService(Service):
    name: ClassVar[str] = "slow"

    def endpoints(self) -> Sequence[Endpoint]:
        return [Endpoint("sleep", f"{self.names.namespace}.sleep", self.sleep)]

    async def sleep(self, request: Request) -> dict[str, Any]:
        seconds = float(request.payload()["seconds"])
        await asyncio.sleep(seconds)
        return {"slept_s": seconds}


def main() -> None:
    common = CommonSettings.from_env(os.environ, service="slow", default_http_port=0)
    configure_logging(service="slow", version=SlowService.version, namespace=common.namespace)
    raise SystemExit(asyncio.run(run_until_signalled(SlowService(common))))


if __name__ == "__main__":
    main()
