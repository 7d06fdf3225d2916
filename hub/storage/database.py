"""The database connection: one async engine, migrated to head before anything uses it.

SQLite (aiosqlite) in the config directory is the embedded default; PostgreSQL (asyncpg) is
chosen by URL for installations that watch many sites. Migrations run on every start, so an
upgraded hub never meets an old schema, and a fresh database needs no manual step.

SQLite is tuned on every new connection (WAL, synchronous=NORMAL, a busy timeout, foreign
keys): WAL lets the web UI read history while the recorder writes, and NORMAL keeps a commit
to a WAL append instead of an fsync per transaction, while still never corrupting the file.

The engine is a `CancelSafeEngine` (cancel_safe.py): a task cancelled inside a transaction
rolls it back and returns its connection before the cancel propagates. `close()` also closes
connections still checked out by tasks nobody stopped, so no lock outlives the Database.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.concurrency import greenlet_spawn

from .cancel_safe import CancelSafeEngine, run_to_completion

_LOGGER = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
DEFAULT_URL = "sqlite+aiosqlite:///voltwatch.db"


class DatabaseError(RuntimeError):
    """The database could not be opened or migrated; the message names the (masked) URL."""


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic >= 1.16 asks for an explicit separator when no ini file is involved.
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str | None:
    """The newest migration(s) shipped with this hub, comma-separated when branches exist.

    Branches appear while features are developed side by side (each adds a migration on the
    same parent); `open()` upgrades to every head, and a merge migration joins them later.
    """
    heads = sorted(ScriptDirectory.from_config(_alembic_config()).get_heads())
    return ",".join(heads) or None


def resolve_url(url: str, config_dir: Path) -> URL:
    """Parse `url`; a relative SQLite path is taken relative to the config directory.

    A bare `sqlite:///` URL gets the aiosqlite driver and `postgresql://` gets asyncpg, since
    the hub only speaks async; users write the short forms in configuration.yaml.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise DatabaseError(f"Invalid database URL {url!r}: {err}") from err
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            if not path.is_absolute():
                path = (config_dir / path).resolve()
            parsed = parsed.set(database=str(path))
    elif backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise DatabaseError(
            f"Unsupported database {mask(parsed)}: use sqlite+aiosqlite:/// or "
            "postgresql+asyncpg://"
        )
    return parsed


def mask(url: URL | str) -> str:
    """The URL as text with any password replaced by ***, for logs and error messages."""
    if isinstance(url, str):
        try:
            url = make_url(url)
        except ArgumentError:
            return "<invalid URL>"
    return url.render_as_string(hide_password=True)


class Database:
    """One engine for the whole hub, migrated to head by `open()`."""

    def __init__(self, url: str, config_dir: Path | str, busy_timeout: float = 10.0,
                 idle_in_transaction_timeout: float | None = None) -> None:
        self.config_dir = Path(config_dir)
        self.url: URL = resolve_url(url, self.config_dir)
        self.dialect: str = self.url.get_backend_name()
        self.busy_timeout = busy_timeout
        #: PostgreSQL ends a session of ours idle inside a transaction this long (None/0: never).
        #: Why: several workers share the rows they upsert (rollups of the same detectors),
        #: and a worker whose link to the database hangs mid-transaction (a dead network path,
        #: a frozen process) would otherwise keep those row locks, and every other worker's
        #: history waiting, until the server's TCP keepalive gives up (hours by default).
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._engine: AsyncEngine | None = None
        #: Pool entries handed out and not yet returned, so close() can end them.
        self._checked_out: dict[int, ConnectionPoolEntry] = {}

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise DatabaseError(f"Database {mask(self.url)} is not open")
        return self._engine

    @property
    def masked_url(self) -> str:
        return mask(self.url)

    def __repr__(self) -> str:
        return f"<Database {self.masked_url}>"

    async def open(self) -> None:
        """Connect, check the connection, and migrate to head; raises DatabaseError."""
        if self._engine is not None:
            return
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite" and self.url.database not in (None, "", ":memory:"):
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        if self.dialect == "postgresql":
            kwargs["pool_pre_ping"] = True
            if self.idle_in_transaction_timeout:
                ms = max(1, int(self.idle_in_transaction_timeout * 1000))
                kwargs["connect_args"] = {"server_settings": {
                    "idle_in_transaction_session_timeout": str(ms)}}
        engine = create_async_engine(self.url, **kwargs)
        engine = CancelSafeEngine(engine.sync_engine)  # see cancel_safe.py
        self._track_checkouts(engine)
        if self.dialect == "sqlite":
            busy_ms = int(self.busy_timeout * 1000)

            def on_connect(dbapi_connection: Any, record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                    cursor.execute("PRAGMA foreign_keys=ON")
                finally:
                    cursor.close()

            event.listen(engine.sync_engine, "connect", on_connect)
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as err:
            await engine.dispose()
            raise DatabaseError(
                f"Cannot connect to database {self.masked_url}: {type(err).__name__}: {err}"
            ) from err
        try:
            async with engine.begin() as conn:
                await conn.run_sync(self._upgrade)
        except Exception as err:
            await engine.dispose()
            raise DatabaseError(
                f"Migrating database {self.masked_url} failed: {type(err).__name__}: {err}"
            ) from err
        self._engine = engine
        _LOGGER.info("Database %s open (schema %s)", self.masked_url, head_revision())

    @staticmethod
    def _upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # a migration may think between statements longer than the hub's transactions do
            connection.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        cfg = _alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "heads")

    async def current_revision(self) -> str | None:
        """The revision the database is at (for diagnostics and tests)."""

        def read(connection: Connection) -> str | None:
            heads = sorted(MigrationContext.configure(connection).get_current_heads())
            return ",".join(heads) or None

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    def _track_checkouts(self, engine: AsyncEngine) -> None:
        checked_out = self._checked_out

        def on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
            checked_out[id(record)] = record

        def on_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
            checked_out.pop(id(record), None)

        event.listen(engine.sync_engine, "checkout", on_checkout)
        event.listen(engine.sync_engine, "checkin", on_checkin)

    @property
    def checked_out(self) -> int:
        """Connections handed out and not yet returned (diagnostics and tests)."""
        return len(self._checked_out)

    async def close(self) -> None:
        """Close every connection, including ones a still-running task holds; safe to cancel.

        `engine.dispose()` only closes the connections resting in the pool. One still checked
        out belongs to a task nobody stopped (or one whose cleanup is still running); left
        open it would keep SQLite's write lock, or a PostgreSQL backend idle in transaction,
        until the process ends, and the next open would wait for it ("database is locked").
        Closing it makes that task fail at its next statement, which is right: the database
        it used is closed.
        """
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await run_to_completion(self._dispose(engine))

    async def _dispose(self, engine: AsyncEngine) -> None:
        leftover = list(self._checked_out.values())
        self._checked_out.clear()
        if leftover:
            _LOGGER.warning("Database %s closing with %d connection(s) still in use; "
                            "closing them (their transactions roll back)",
                            self.masked_url, len(leftover))
        for record in leftover:
            try:
                await greenlet_spawn(record.invalidate)
            except Exception:  # the others must still be closed
                _LOGGER.exception("Closing a connection still in use failed")
        await engine.dispose()
