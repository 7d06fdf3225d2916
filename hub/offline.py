"""The configured database for commands that run beside (or without) a running hub:
`voltwatch user …`, `token …`, `report monthly`.

The configuration is validated with every installed plugin's schema (their sections must be
known), and the reason is printed when it or the database cannot be opened, so each command
only says what it does with them.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any


def load_or_report(config_dir: Path) -> dict[str, Any] | None:
    """The validated configuration, or None after printing every error with file and line."""
    from hub.core.config import ConfigError, load_configuration
    from hub.core.plugins import PluginManager

    plugins = PluginManager()
    plugins.load_entrypoints()
    try:
        return load_configuration(config_dir, plugins)
    except ConfigError as err:
        print(err.report(), file=sys.stderr)
        return None


@asynccontextmanager
async def open_configured(config_dir: Path) -> AsyncIterator[tuple[dict[str, Any], Any] | None]:
    """(configuration, open Database), or None after printing why there is none."""
    from hub.storage.database import Database, DatabaseError

    config = load_or_report(config_dir)
    if config is None:
        yield None
        return
    db = Database(config["database"]["url"], config_dir)
    try:
        await db.open()
    except DatabaseError as err:
        print(str(err), file=sys.stderr)
        yield None
        return
    try:
        yield config, db
    finally:
        await db.close()
