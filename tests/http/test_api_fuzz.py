"""OpenAPI-driven fuzzing: schemathesis against the hub's own /api/openapi.json, zero 5xx (#14).

The hub is real and has every installed plugin (so plugin routes are fuzzed too), a project
tree and devices, SQLite storage; schemathesis runs as its CLI in a subprocess with a system
token (super_admin: every operation is reachable) and a fixed seed, so a failure reproduces.
Only the `not_a_server_error` check is asked for: a 4xx for nonsense is the right answer; a
500 is a bug. The hub's own response counter is checked too, so an error that schemathesis
might not attribute (a websocket, a HEAD) still fails the test.

Four phases: examples, coverage, fuzzing (each operation alone) and stateful (chains of calls
along the links schemathesis infers from the document, docs/security.md "Fuzzing"). Run time
is bounded by the examples per operation and the stateful scenarios (about 1-2 minutes
here); raise `VOLTWATCH_FUZZ_EXAMPLES` and `VOLTWATCH_FUZZ_SCENARIOS` for a deeper run.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

from hub.http import tokens
from hub.hub import Hub

EXAMPLES = os.environ.get("VOLTWATCH_FUZZ_EXAMPLES", "12")

CONFIG = {
    "hub": {"name": "Fuzz", "language": "en"},
    "http": {"port": 0, "rate_limits": {"login": "100000/min", "tokens": "100000/min"}},
    "database": {"url": "sqlite+aiosqlite:///fuzz.db"},
    "projects": [{"id": "school-1", "name": "第一中学", "children": [{"id": "school-1-a",
                                                                  "name": "教学楼A"}]}],
    "devices": [
        {"id": "arcm-1", "name": "配电箱1", "platform": "arcm", "project": "school-1-a",
         "link": {"transport": "modbus_tcp", "host": "127.0.0.1", "port": 9, "unit": 1}},
        {"id": "smoke-1", "platform": "smoke", "project": "school-1",
         "link": {"transport": "mqtt"}},
    ],
}


# Passed as --config-file. The stateful phase chains operations along the links
# schemathesis infers from the document (a resource an operation returns feeds the path
# parameters of the next: 166 links here); it gets its own, larger scenario count, because a
# scenario only follows a link when its first call succeeded.
SCHEMATHESIS_TOML = f"""
generation.max-examples = {EXAMPLES}

[phases.stateful]
max-steps = 6
generation.max-examples = {os.environ.get("VOLTWATCH_FUZZ_SCENARIOS", "30")}
"""


def _schemathesis() -> str:
    return str(Path(sys.executable).with_name("schemathesis"))


async def test_fuzzing_the_openapi_document_finds_no_server_error(tmp_path: Path) -> None:
    hub = Hub(config_dir=tmp_path, config=CONFIG)
    await hub.async_start()
    try:
        token = await tokens.create_token(hub.storage, "fuzz")
        (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_TOML, encoding="utf-8")
        process = await asyncio.create_subprocess_exec(
            _schemathesis(), "--config-file", str(tmp_path / "schemathesis.toml"),
            "run", f"{hub.http.url}/api/openapi.json",
            "--checks", "not_a_server_error",
            "--header", f"Authorization: Bearer {token}",
            "--seed", "14", "--workers", "1",
            "--phases", "examples,coverage,fuzzing,stateful",
            # Revoking the run's own token would turn the rest of the run into 401s.
            "--exclude-path-regex", "^/api/tokens/",
            "--request-timeout", "30", "--no-color", "--warnings", "off",
            cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        server_errors = {code: n for code, n in hub.http.response_counts.items() if code >= 500}
        assert process.returncode == 0, text[-6000:]
        assert not server_errors, (server_errors, text[-3000:])
        assert sum(hub.http.response_counts.values()) > 500, text[-3000:]  # it really ran
        # The stateful phase ran and had links to follow (a document that lost them shows).
        links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", text)
        assert links is not None and int(links.group(2)) > 0, text[-3000:]
    finally:
        await hub.async_stop()
