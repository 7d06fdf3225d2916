"""Users: who they are, their role and projects, and their argon2 password hash.

Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher` defaults, RFC 9106's low
memory profile). Hashing costs tens of milliseconds and 64 MiB on purpose, so it runs in the
executor, never on the event loop. When the library's defaults move on, a successful login
rehashes the password (`check_needs_rehash`), so old hashes upgrade themselves.

A user's name is unique and never changes: it is what Context.user_id, `acked_by` and the
audit log record. The id (a ULID) is what URLs and tokens refer to.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from hub.core.context import ulid_now

from .permissions import RANK, SUPER_ADMIN

_LOGGER = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[\w.@-]{1,64}$")  # \w includes CJK: 张三 is a valid name
PHONE_RE = re.compile(r"^\+?[0-9 -]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class UserError(ValueError):
    """A user change that cannot be made; the message says why (shown to the caller)."""


@lru_cache(maxsize=1)
def hasher() -> PasswordHasher:
    return PasswordHasher()


# A hash of nothing anyone knows: an unknown name costs the same verify as a known one, so the
# answer time does not tell an attacker which names exist.
@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hasher().hash("voltwatch-no-such-user")


def hash_password_sync(password: str) -> str:
    return hasher().hash(password)


def verify_password_sync(password_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash); a missing or malformed hash never matches."""
    try:
        hasher().verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False, False
    if password_hash is None:
        return False, False
    return True, hasher().check_needs_rehash(password_hash)


async def hash_password(password: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(None, hash_password_sync, password)


async def verify_password(password_hash: str | None, password: str) -> tuple[bool, bool]:
    return await asyncio.get_running_loop().run_in_executor(
        None, verify_password_sync, password_hash, password
    )


def check_password(password: str, min_length: int = MIN_PASSWORD) -> str:
    if not isinstance(password, str) or len(password) < min_length:
        raise UserError(f"A password needs at least {min_length} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"A password may have at most {MAX_PASSWORD} characters")
    return password


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_RE.match(name):
        raise UserError(
            f"Invalid user name {name!r}: 1-64 letters, digits, '.', '_', '-' or '@'"
        )
    return name


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    role: str
    projects: tuple[str, ...] = ()
    phone: str | None = None
    password_hash: str | None = field(default=None, repr=False)
    disabled: bool = False
    created_at: float = 0.0
    created_by: str | None = None
    password_changed_at: float | None = None
    failed_logins: int = 0
    locked_until: float | None = None
    language: str | None = None

    @classmethod
    def from_row(cls, row: Any) -> User:
        data = dict(row)
        data["projects"] = tuple(data.get("projects") or ())
        data["disabled"] = bool(data.get("disabled"))
        return cls(**data)

    @property
    def unrestricted(self) -> bool:
        """Only super_admin sees the whole tree; everyone else sees their projects' subtrees."""
        return self.role == SUPER_ADMIN

    def public(self) -> dict[str, Any]:
        """What the API shows about a user (never the hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "projects": list(self.projects),
            "phone": self.phone,
            "disabled": self.disabled,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "password_changed_at": self.password_changed_at,
            "locked_until": self.locked_until,
            "language": self.language,
        }


def _table() -> sa.Table:
    from hub.storage.schema import users

    return users


class UserStore:
    """Users in the hub's database. Every method is one short transaction."""

    def __init__(self, db: Any) -> None:
        self.db = db
        #: moves on every create/update, so caches of users (notification routing) know
        #: when to read again
        self.version = 0
        #: called with each user this process wrote, right after the write (the notification
        #: directory patches its lists, so routing during a database stall knows them)
        self.written: list[Callable[[User], None]] = []

    async def get(self, user_id: str) -> User | None:
        return await self._one(_table().c.id == user_id)

    async def get_by_name(self, name: str) -> User | None:
        return await self._one(_table().c.name == name)

    async def _one(self, where: Any) -> User | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(sa.select(_table()).where(where))).mappings().first()
        return None if row is None else User.from_row(row)

    async def list(self) -> list[User]:
        table = _table()
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(table).order_by(table.c.name))).mappings().all()
        return [User.from_row(row) for row in rows]

    async def create(
        self,
        name: str,
        role: str,
        password_hash: str | None,
        projects: list[str] | tuple[str, ...] = (),
        phone: str | None = None,
        language: str | None = None,
        created_by: str | None = None,
        now: float | None = None,
    ) -> User:
        name = check_name(name)
        if role not in RANK:
            raise UserError(f"Unknown role {role!r}")
        if role != SUPER_ADMIN and not projects:
            raise UserError(f"A {role} needs at least one project")
        if phone is not None and not PHONE_RE.match(phone):
            raise UserError(f"Invalid phone number {phone!r}")
        if await self.get_by_name(name) is not None:
            raise UserError(f"A user named {name!r} already exists")
        created = time.time() if now is None else now
        values = {
            "id": ulid_now(),
            "name": name,
            "role": role,
            "projects": [] if role == SUPER_ADMIN else sorted(set(projects)),
            "phone": phone,
            "password_hash": password_hash,
            "disabled": False,
            "created_at": created,
            "created_by": created_by,
            "password_changed_at": created if password_hash else None,
            "failed_logins": 0,
            "locked_until": None,
            "language": language,
        }
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(_table().insert().values(**values))
        except sa.exc.IntegrityError as err:  # two creators racing for one name
            raise UserError(f"A user named {name!r} already exists") from err
        self.version += 1
        user = User.from_row(values)
        self._tell(user)
        return user

    async def update(self, user_id: str, **changes: Any) -> User | None:
        if "projects" in changes:
            changes["projects"] = sorted(set(changes["projects"]))
        table = _table()
        async with self.db.engine.begin() as conn:
            await conn.execute(table.update().where(table.c.id == user_id).values(**changes))
        self.version += 1
        user = await self.get(user_id)
        if user is not None:
            self._tell(user)
        return user

    def _tell(self, user: User) -> None:
        for listener in list(self.written):
            try:
                listener(user)
            except Exception:  # a cache must not fail the write that succeeded
                _LOGGER.exception("A user-write listener failed")

    async def record_failure(self, user_id: str, locked_until: float | None) -> None:
        """Count a failed login in SQL (`failed_logins + 1`), so parallel attempts all count."""
        table = _table()
        values: dict[str, Any] = {"failed_logins": table.c.failed_logins + 1}
        if locked_until is not None:
            values["locked_until"] = locked_until
        async with self.db.engine.begin() as conn:
            await conn.execute(table.update().where(table.c.id == user_id).values(**values))
