"""`voltwatch db migrate --to URL`: a real SQLite installation copied to a real PostgreSQL server.

The source is written by a real Hub (recorder with rollups, events, a token, the auth tables'
own rows); the command runs as a subprocess, as an operator would run it. Every table is then
compared row for row, and the hub's next insert on PostgreSQL must get a fresh id (the
sequences were moved past the copied ids).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hub.core.plugins import PluginManager
from hub.http import tokens
from hub.storage.database import Database
from hub.storage.schema import metadata, state_rollups, states

from .conftest import MiniHub


async def _rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    async with db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            out[table.name] = [tuple(row) for row in await conn.execute(
                select(table).order_by(*order))]
    return out


def _migrate(config_dir: Path, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "db", "migrate", "--to", url, "--config", str(config_dir),
         "--batch", "100"],
        capture_output=True, text=True, timeout=300, check=False,
    )


async def test_sqlite_installation_moves_to_postgresql(tmp_path: Path, pg_url: str,
                                                       hub: MiniHub) -> None:
    from hub.hub import Hub

    (tmp_path / "configuration.yaml").write_text("http: {enabled: false}\n", encoding="utf-8")
    source_hub = Hub(config_dir=tmp_path, config={"http": {"enabled": False}},
                     plugin_manager=PluginManager())
    await source_hub.async_start()
    try:
        for i in range(450):
            source_hub.states.async_set(f"sensor.arcm_{i % 3}_temperature_1", 20 + i / 10,
                                        {"unit_of_measurement": "°C"},
                                        timestamp=1_790_000_000 + i * 60)
        source_hub.bus.async_fire("alarm_cleared", {"id": 7, "note": "中文"})
        await tokens.create_token(source_hub.storage, "ops")
        await source_hub.recorder.async_flush()
    finally:
        await source_hub.async_stop()

    done = _migrate(tmp_path, pg_url)
    assert done.returncode == 0, done.stderr
    assert "Copied" in done.stdout and "configuration.yaml" in done.stdout

    source = Database("sqlite+aiosqlite:///voltwatch.db", tmp_path)
    target = Database(pg_url, tmp_path)
    await source.open()
    await target.open()
    try:
        before, after = await _rows(source), await _rows(target)
        assert after == before
        assert len(after["states"]) >= 450 and len(after["state_rollups"]) > 0
        assert await target.current_revision() == await source.current_revision()

        # The next row on PostgreSQL gets a new id: the sequence continues after the copy.
        from hub.storage.recorder import Recorder

        recorder = Recorder(hub, target, {"max_batch": 100})
        await recorder.async_start()
        try:
            hub.states.async_set("sensor.arcm_0_temperature_1", 99, timestamp=1_790_100_000)
            await recorder.async_flush()
            assert recorder.commit_errors == 0, recorder.last_error
        finally:
            await recorder.async_stop()
        async with target.engine.connect() as conn:
            newest = (await conn.execute(select(states.c.state_id).order_by(
                states.c.state_id.desc()).limit(1))).scalar_one()
            buckets = (await conn.execute(select(state_rollups.c.value_max).where(
                state_rollups.c.resolution == 86400).order_by(
                state_rollups.c.value_max.desc()).limit(1))).scalar_one()
        assert newest == max(row[0] for row in before["states"]) + 1
        assert buckets == 99
    finally:
        await source.close()
        await target.close()

    again = _migrate(tmp_path, pg_url)
    assert again.returncode == 1
    assert "is not empty: table" in again.stderr
