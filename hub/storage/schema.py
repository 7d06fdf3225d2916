"""The database schema, as SQLAlchemy Core tables (no ORM: the recorder's speed depends on it).

Shaped for years of history on a small box as well as on PostgreSQL:

* `states` rows carry a small integer `metadata_id` instead of the entity id string (the
  mapping lives in `states_meta`, as Home Assistant does), so a reading costs a few dozen bytes.
* Attributes rarely change between readings; they are stored once in `state_attributes`
  (deduplicated by content) and referenced by id, never repeated per row.
* `last_changed_ts` is NULL when it equals `last_updated_ts` (the common case for a changing
  measurement); readers fill it in. Timestamps are float unix seconds (`Double`) because that
  is what the state machine holds: no conversion on the hot path, and range scans on a number.
* `value` holds the state as a number when it is one, so rollups and history charts do not
  parse text.

Every type here works on SQLite and PostgreSQL. The migration `0001_initial` creates exactly
these tables; a schema change needs a new migration, not an edit here alone.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

# Names constraints predictably, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only makes an INTEGER PRIMARY KEY an alias of the rowid (cheap autoincrement);
# PostgreSQL needs 64 bits for years of readings.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

CONTEXT_ID = String(26)  # a ULID
USER_ID = String(64)

states_meta = Table(
    "states_meta",
    metadata,
    Column("metadata_id", Integer, primary_key=True),
    Column("entity_id", String(255), nullable=False, unique=True),
)

state_attributes = Table(
    "state_attributes",
    metadata,
    Column("attributes_id", BigIntPK, primary_key=True),
    # 32-bit content hash: an index lookup key only; equality is decided on shared_attrs.
    Column("hash", BigInteger, nullable=False, index=True),
    Column("shared_attrs", Text, nullable=False),
)

states = Table(
    "states",
    metadata,
    Column("state_id", BigIntPK, primary_key=True),
    Column(
        "metadata_id",
        Integer,
        ForeignKey("states_meta.metadata_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("state", Text, nullable=True),
    Column("value", Double, nullable=True),
    Column(
        "attributes_id",
        BigInteger,
        ForeignKey("state_attributes.attributes_id"),
        nullable=True,
    ),
    Column("last_changed_ts", Double, nullable=True),  # NULL: equals last_updated_ts
    Column("last_updated_ts", Double, nullable=False),
    Column("context_id", CONTEXT_ID, nullable=True),
    Column("context_user_id", USER_ID, nullable=True),
    Column("context_parent_id", CONTEXT_ID, nullable=True),
    Index("ix_states_metadata_id_last_updated_ts", "metadata_id", "last_updated_ts"),
    Index("ix_states_last_updated_ts", "last_updated_ts"),
    Index("ix_states_context_id", "context_id"),
)

events = Table(
    "events",
    metadata,
    Column("event_id", BigIntPK, primary_key=True),
    Column("event_type", String(255), nullable=False),
    Column("event_data", Text, nullable=True),  # JSON text
    Column("origin", String(32), nullable=True),
    Column("time_fired_ts", Double, nullable=False),
    Column("context_id", CONTEXT_ID, nullable=True),
    Column("context_user_id", USER_ID, nullable=True),
    Column("context_parent_id", CONTEXT_ID, nullable=True),
    Index("ix_events_time_fired_ts", "time_fired_ts"),
    Index("ix_events_event_type_time_fired_ts", "event_type", "time_fired_ts"),
    Index("ix_events_context_id", "context_id"),
)

# Columns = the fields of hub.core.registries.DeviceEntry.
devices = Table(
    "devices",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("platform", String(64), nullable=False),
    Column("name", String(255), nullable=True),
    Column("profile", String(255), nullable=True),
    Column("project", String(255), nullable=True, index=True),
    Column("area", String(255), nullable=True),
    Column("location", String(255), nullable=True),
    Column("link", JSON, nullable=False, default=dict),
    Column("manufacturer", String(255), nullable=True),
    Column("model", String(255), nullable=True),
    Column("firmware", String(255), nullable=True),
    Column("source", String(32), nullable=False, default="config"),
    Column("options", JSON, nullable=False, default=dict),
)

# Columns = the fields of hub.core.registries.EntityEntry. No foreign key to devices: a plugin
# may register entities before (or without) its device being persisted.
entities = Table(
    "entities",
    metadata,
    Column("entity_id", String(255), primary_key=True),
    Column("device_id", String(255), nullable=True, index=True),
    Column("unique_id", String(255), nullable=False),
    Column("platform", String(64), nullable=False),
    Column("name", String(255), nullable=True),
    Column("unit", String(32), nullable=True),
    Column("device_class", String(64), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
)

# API bearer tokens (hub/http/tokens.py is written against exactly these names). Only the
# sha256 hex of a token is stored, never the token itself.
tokens = Table(
    "tokens",
    metadata,
    Column("id", String(26), primary_key=True),  # ULID
    Column("name", String(255), nullable=False),
    Column("user_id", String(64), nullable=True, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
    Column("last_used_at", Double, nullable=True),
)

# Small facts the hub keeps about itself (e.g. when the recorder last ran).
kv = Table(
    "kv",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=True),
    Column("updated_at", Double, nullable=True),
)

# Alarm, fault and event records (hub/core/alarms.py; migration 0002). One row per occurrence:
# a repeat of an active alarm updates its row (count, last_seen_at), never adds one. The
# partial unique index below is what makes "one active record per (device, type)" hold across
# several hubs on one PostgreSQL, not only inside one process. Momentary events are stored with
# status `cleared` and cleared_at == started_at, so they never occupy the active slot.
ALARM_ACTIVE = "active"
ALARM_CLEARED = "cleared"

alarms = Table(
    "alarms",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("device_id", String(255), nullable=False),
    Column("type", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("entity_id", String(255), nullable=True),
    # Where and what the device was when the record was raised (the event log shows these even
    # after the device is renamed, moved or removed).
    Column("project", String(255), nullable=True),
    Column("area", String(255), nullable=True),
    Column("location", String(255), nullable=True),
    Column("device_name", String(255), nullable=True),
    Column("platform", String(64), nullable=True),
    Column("address", String(255), nullable=True),
    Column("unit_address", String(64), nullable=True),
    Column("message", Text, nullable=False),
    Column("message_en", Text, nullable=True),
    Column("value", Double, nullable=True),
    Column("unit", String(16), nullable=True),
    Column("sources", JSON, nullable=False, default=list),
    Column("latching", Boolean, nullable=False, default=False),
    Column("count", Integer, nullable=False, default=1),
    Column("started_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    Column("cleared_at", Double, nullable=True),
    Column("cleared_by", USER_ID, nullable=True),
    Column("acked_at", Double, nullable=True),
    Column("acked_by", USER_ID, nullable=True),
    Column("handled_at", Double, nullable=True),
    Column("handled_by", USER_ID, nullable=True),
    Column("note", Text, nullable=True),
    Column("context_id", CONTEXT_ID, nullable=True),
    Index("ix_alarms_started_at", "started_at"),
    Index("ix_alarms_device_id_started_at", "device_id", "started_at"),
    Index("ix_alarms_project_started_at", "project", "started_at"),
    Index("ix_alarms_status", "status"),
)
Index(
    "ux_alarms_active_device_type",
    alarms.c.device_id,
    alarms.c.type,
    unique=True,
    sqlite_where=alarms.c.status == ALARM_ACTIVE,
    postgresql_where=alarms.c.status == ALARM_ACTIVE,
)

# Threshold delays in progress (delay-on timers), so a restart resumes them instead of
# starting over or forgetting them. `noted_at` is the last time the condition was known to
# hold (updated at a clean stop): the elapsed part of the delay is noted_at - since.
alarm_pending = Table(
    "alarm_pending",
    metadata,
    Column("device_id", String(255), primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("entity_id", String(255), primary_key=True),
    Column("since", Double, nullable=False),
    Column("noted_at", Double, nullable=False),
)
