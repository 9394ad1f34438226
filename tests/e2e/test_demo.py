"""``rtml demo``'s story, run whole (shortened history), and its cleanup: nothing of its namespace is left."""

from __future__ import annotations

import io
from pathlib import Path

import asyncpg
import pytest
from nats.js.errors import NotFoundError

from rtml.demo.story import DemoConfig, Story, run
from rtml.demo.view import LiveView
from shared.bus import connect
from shared.online import open_redis
from shared.settings import CommonSettings
from shared.subjects import Names


@pytest.mark.timeout(300)
async def test_the_demo_tells_its_whole_story_and_cleans_up(infra: CommonSettings, tmp_path: Path) -> None:
    out = io.StringIO()
    told = Story()
    config = DemoConfig(home=tmp_path, history_s=5400.0, warmup_s=1800.0, baseline_s=5.0, plain=True, route_logs=False)
    with LiveView(plain=True, out=out) as view:
        await run(config, view, told)
    text = out.getvalue()
    assert told.complete, (told.rows, text[-3000:])
    stages = [row.stage for row in told.rows]
    assert stages[:4] == ["infrastructure", "services", "history replay", "train v1"]
    assert {"drift alert", "train v2", "shadow v2", "canary v2", "canary v3", "live traffic", "total"} <= set(stages)
    for phrase in ("ALERT drift raised", "live: predict", "canary v3: rolled_back", "ALERT rollback"):
        assert phrase in text
    assert told.log_file is not None and told.log_file.exists()
    namespace = told.log_file.stem
    assert not (tmp_path / f"{namespace}-work").exists()
    names = Names(namespace)
    async with connect(infra.nats_url, name="rtml-demo-check") as nc:
        with pytest.raises(NotFoundError):
            await nc.jetstream().stream_info(names.stream("events"))
    async with open_redis(infra.redis_url) as redis:
        assert [key async for key in redis.scan_iter(match=f"{names.redis_prefix}*", count=1000)] == []
    connection = await asyncpg.connect(infra.database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", namespace) == 0
    finally:
        await connection.close()
