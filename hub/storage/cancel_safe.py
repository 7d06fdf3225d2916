"""An async engine whose connections and transactions survive the cancellation of their task.

Why: a task cancelled inside `async with engine.begin()` (the hub's stop cancels its background
tasks, and cancels again every second until they end) must not leave its connection holding
SQLite's write lock or a PostgreSQL backend "idle in transaction" with its row locks. SQLAlchemy
2.1 shields `AsyncConnection.close()` but not the transaction's exit: a second cancel landing
while the ROLLBACK is awaited throws into the pool's reset, the pool gives the connection up
("terminate"), and the real close runs later in a task nobody waits for. Measured here with a
SQLite file: 15 of 60 cancel storms left the file locked after the cancelled task had ended;
if the loop stops before that orphan task runs, the lock stays until the process exits.

What this module does instead: every exit of a connection or transaction, and the checkout on
entry, runs in a task of its own that a cancel cannot cut short (`run_to_completion`). On an
error or a cancel the exit rolls back; when the rollback itself fails, the connection is
invalidated and its close awaited, so the database has released it before the caller goes on.
The CancelledError (or the error) then propagates unchanged. Call sites keep writing
`async with db.engine.begin()` / `db.engine.connect()`: only the engine's class changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

_LOGGER = logging.getLogger(__name__)

_T = TypeVar("_T")


async def run_to_completion(coro: Coroutine[Any, Any, _T]) -> _T:
    """Await `coro` in a task of its own until it ends, however often the caller is cancelled.

    A cancel received meanwhile is re-raised once `coro` has finished, so work on a connection
    is never abandoned halfway and the caller never returns before its cleanup is done. When
    the caller was cancelled, the CancelledError wins over an error of `coro` (logged), so
    cancellation still propagates as a cancellation.
    """
    task = asyncio.ensure_future(coro)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait((task,))
        except asyncio.CancelledError as err:
            cancelled = err
    if cancelled is not None:
        if not task.cancelled() and (error := task.exception()) is not None:
            _LOGGER.warning("Database work finished after its task was cancelled, failing: "
                            "%s: %s", type(error).__name__, error)
        raise cancelled
    return task.result()


class CancelSafeTransaction(AsyncTransaction):
    """A transaction whose exit (commit, or rollback on error/cancel) cannot be cut short."""

    __slots__ = ()

    async def __aexit__(self, type_: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await run_to_completion(self._exit(type_, value, traceback))

    async def _exit(self, type_: type[BaseException] | None, value: BaseException | None,
                    traceback: TracebackType | None) -> None:
        try:
            await super().__aexit__(type_, value, traceback)
        except Exception as err:
            if type_ is None:
                raise  # a failed COMMIT is the caller's error to see
            # The block already failed (or was cancelled): that exception must propagate, not
            # the rollback's. The connection's exit retries the rollback or closes it.
            _LOGGER.warning("Rollback of a failed transaction failed: %s: %s",
                            type(err).__name__, err)


class CancelSafeConnection(AsyncConnection):
    """A connection whose checkout and release cannot be abandoned halfway by a cancel."""

    __slots__ = ()

    def begin(self) -> AsyncTransaction:
        assert self._proxied
        return CancelSafeTransaction(self)

    def begin_nested(self) -> AsyncTransaction:
        assert self._proxied
        return CancelSafeTransaction(self, nested=True)

    # Each statement runs to its end even when the task is cancelled meanwhile; the cancel is
    # raised right after it. Cancelled inside a statement, SQLAlchemy would instead invalidate
    # the connection, and a second cancel would cut that close short, leaving the real close
    # (and the lock release) to a task nobody awaits. An SQLite statement cannot be stopped
    # anyway (it runs in aiosqlite's thread); on PostgreSQL a cancel now waits for the
    # statement in flight rather than cancelling it on the server. (`scalar`/`scalars` go
    # through `execute`.)
    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await run_to_completion(super().execute(*args, **kwargs))

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return await run_to_completion(super().exec_driver_sql(*args, **kwargs))

    async def run_sync(self, *args: Any, **kwargs: Any) -> Any:
        return await run_to_completion(super().run_sync(*args, **kwargs))

    async def commit(self) -> None:
        await run_to_completion(super().commit())

    async def rollback(self) -> None:
        await run_to_completion(super().rollback())

    async def __aenter__(self) -> AsyncConnection:
        try:
            return await run_to_completion(self.start(is_ctxmanager=True))
        except BaseException:
            # Cancelled while the pool handed the connection out: give it back, then raise.
            if self.sync_connection is not None:
                await run_to_completion(self._release(failed=True))
            raise

    async def __aexit__(self, type_: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await run_to_completion(self._release(failed=type_ is not None))

    async def _release(self, failed: bool) -> None:
        """Roll back what the block left open (on error or cancel) and return the connection.

        A rollback that fails leaves the connection in an unknown state (a statement may still
        run on it): it is invalidated, which closes it and waits for the close.
        """
        try:
            if failed and self.sync_connection is not None and self.in_transaction():
                await self.rollback()
        except Exception as err:  # noqa: BLE001 - any failure means: do not reuse it
            _LOGGER.warning("Rollback after %s failed (%s: %s); closing the connection",
                            "a cancel or error", type(err).__name__, err)
            try:
                await self.invalidate(err)
            except Exception:  # closing is all that is left to try
                _LOGGER.exception("Closing a connection after a failed rollback failed")
        finally:
            await self.close()


class CancelSafeEngine(AsyncEngine):
    """An AsyncEngine handing out `CancelSafeConnection`s (so `begin()` is safe as well)."""

    __slots__ = ()

    _connection_cls = CancelSafeConnection
