"""A service with one slow endpoint, run as a subprocess by the shutdown test."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

from shared.runtime import Endpoint, Request, Service, serve
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
    serve(lambda env: SlowService(CommonSettings.from_env(env, service="slow", default_http_port=0)))


if __name__ == "__main__":
    main()
