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
    UniqueConstraint,
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

# Rollups of numeric states (hub/storage/rollups.py; migration 0008): one row per entity,
# resolution (300, 3600 or 86400 seconds) and bucket. They keep sum and count rather than the
# mean, and `last_ts` beside `value_last`, so two partial aggregates of one bucket merge
# exactly: the recorder adds each batch's aggregate in the same transaction as its raw rows.
# 5-minute and 1-hour buckets start at multiples of their length in unix time; a 1-day bucket
# starts at local midnight in the hub's time zone. Without rowid on SQLite: the primary key
# is the only way these rows are read, so the table *is* that index.
ROLLUP_5M, ROLLUP_1H, ROLLUP_1D = 300, 3600, 86400

state_rollups = Table(
    "state_rollups",
    metadata,
    Column(
        "metadata_id",
        Integer,
        ForeignKey("states_meta.metadata_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("resolution", Integer, primary_key=True),
    Column("bucket_ts", Double, primary_key=True),
    Column("value_count", Integer, nullable=False),
    Column("value_sum", Double, nullable=False),
    Column("value_min", Double, nullable=False),
    Column("value_max", Double, nullable=False),
    Column("value_last", Double, nullable=False),
    Column("last_ts", Double, nullable=False),
    # the purge deletes by (resolution, age)
    Index("ix_state_rollups_resolution_bucket_ts", "resolution", "bucket_ts"),
    sqlite_with_rowid=False,
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
    # Project roots the token is narrowed to (JSON list), or NULL for its user's full scope
    # (migration 0004_auth). A token never sees more than its user, whatever this says.
    Column("scope", JSON, nullable=True),
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

# -- hazards: work orders, patrols, reminders (hub/core/workorders.py, patrols.py,
# reminders.py; migration 0003_workorders) ---------------------------------------------------
# A work order's current state is one row; everything that happened to it (each transition
# with who and when, each comment, each photo) is a row of `workorder_events`, so the history
# is append-only and the row never has to carry a growing list. Per-transition timestamps are
# also columns of the row because statistics (mean time to repair) aggregate over them.
WORKORDER_CLOSED = "closed"

workorders = Table(
    "workorders",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("title", String(255), nullable=False),
    Column("description", Text, nullable=True),
    # No foreign key to alarms: alarm records are history and are never deleted, and a work
    # order must survive a retention job that one day prunes old alarms.
    Column("alarm_id", BigInteger, nullable=True),
    Column("patrol_id", BigInteger, nullable=True),
    Column("patrol_item", String(255), nullable=True),
    Column("source", String(16), nullable=False, default="manual"),
    Column("device_id", String(255), nullable=True),
    Column("project", String(255), nullable=True),
    Column("assignee", String(255), nullable=True),
    Column("priority", String(16), nullable=False, default="normal"),
    Column("status", String(16), nullable=False),
    Column("resolution", String(16), nullable=True),  # repaired | cancelled, set when closed
    Column("due_at", Double, nullable=True),
    Column("created_by", String(255), nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("dispatched_at", Double, nullable=True),
    Column("accepted_at", Double, nullable=True),
    Column("repaired_at", Double, nullable=True),
    Column("verified_at", Double, nullable=True),
    Column("closed_at", Double, nullable=True),
    Column("context_id", CONTEXT_ID, nullable=True),
    Index("ix_workorders_status_due_at", "status", "due_at"),
    Index("ix_workorders_project_created_at", "project", "created_at"),
    Index("ix_workorders_created_at", "created_at"),
    Index("ix_workorders_assignee", "assignee"),
    Index("ix_workorders_device_id", "device_id"),
    Index("ix_workorders_patrol_id", "patrol_id"),
)
# One open work order per alarm, in the database itself: an automation that calls
# `workorder.create` on every repeat of an alarm, or two hubs doing it at once, get the one
# that exists instead of a second.
Index(
    "ux_workorders_open_alarm",
    workorders.c.alarm_id,
    unique=True,
    sqlite_where=(workorders.c.status != WORKORDER_CLOSED) & workorders.c.alarm_id.is_not(None),
    postgresql_where=(workorders.c.status != WORKORDER_CLOSED)
    & workorders.c.alarm_id.is_not(None),
)

workorder_events = Table(
    "workorder_events",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column(
        "workorder_id",
        BigInteger,
        ForeignKey("workorders.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", Double, nullable=False),
    Column("actor", String(255), nullable=True),
    # created | transition | assigned | due | comment | photo
    Column("action", String(16), nullable=False),
    Column("from_status", String(16), nullable=True),
    Column("to_status", String(16), nullable=True),
    Column("note", Text, nullable=True),
    Column("data", JSON, nullable=True),
    Index("ix_workorder_events_workorder_id_at", "workorder_id", "at"),
)

workorder_photos = Table(
    "workorder_photos",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column(
        "workorder_id",
        BigInteger,
        ForeignKey("workorders.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("file_name", String(64), nullable=False),  # on disk, under uploads/workorders/<id>/
    Column("original_name", String(255), nullable=True),
    Column("content_type", String(32), nullable=False),
    Column("size", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("uploaded_by", String(255), nullable=True),
    Column("uploaded_at", Double, nullable=False),
)

# Patrol inspections (巡检): a template is a checklist per project with a period; `next_due_at`
# is persisted so generation survives a restart, and (template_id, scheduled_at) is unique so
# a restart, a retry or a second hub can never generate the same round twice.
patrol_templates = Table(
    "patrol_templates",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("project", String(255), nullable=True, index=True),
    Column("items", JSON, nullable=False, default=list),
    Column("period", String(16), nullable=False),  # daily | weekly | monthly | interval
    Column("interval", Double, nullable=True),  # seconds, for period == interval
    # the first round; every later one is counted from it, so months never drift
    Column("start_at", Double, nullable=False),
    Column("allowed", Double, nullable=True),  # seconds to complete; default: the period
    Column("assignee", String(255), nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("next_due_at", Double, nullable=False),
    Column("created_by", String(255), nullable=True),
    Column("created_at", Double, nullable=False),
    Index("ix_patrol_templates_enabled_next_due_at", "enabled", "next_due_at"),
)

patrol_instances = Table(
    "patrol_instances",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column(
        "template_id",
        BigInteger,
        ForeignKey("patrol_templates.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(255), nullable=False),
    Column("project", String(255), nullable=True),
    Column("items", JSON, nullable=False, default=list),  # the checklist as it was then
    Column("assignee", String(255), nullable=True),
    Column("status", String(16), nullable=False),  # pending | completed
    Column("scheduled_at", Double, nullable=False),
    Column("due_at", Double, nullable=False),
    Column("completed_at", Double, nullable=True),
    Column("completed_by", String(255), nullable=True),
    Column("results", JSON, nullable=True),
    Column("failed_count", Integer, nullable=False, default=0),
    Index("ux_patrol_instances_template_id_scheduled_at", "template_id", "scheduled_at",
          unique=True),
    Index("ix_patrol_instances_status_due_at", "status", "due_at"),
    Index("ix_patrol_instances_project_scheduled_at", "project", "scheduled_at"),
)

# Reminders already sent (hub/core/reminders.py): one row per (reason, object) while the
# object stays past its threshold, with the threshold it crossed, so a restart does not
# repeat a reminder and a new crossing (a due date moved, then missed again) fires anew.
reminders_sent = Table(
    "reminders_sent",
    metadata,
    Column("reason", String(32), primary_key=True),
    Column("object_id", BigInteger, primary_key=True),
    Column("threshold_at", Double, nullable=False),
    Column("first_sent_at", Double, nullable=False),
    Column("last_sent_at", Double, nullable=False),
    Column("count", Integer, nullable=False, default=1),
)

# -- users, sessions and the audit log (hub/auth/; migration 0004_auth) -----------------------
# `projects` holds the roots of the user's part of the project tree (a JSON list); the scope
# is each root and everything below it. Names are unique and never change: they are what
# Context.user_id, `acked_by` and the audit log record, so a rename would rewrite history.
users = Table(
    "users",
    metadata,
    Column("id", String(26), primary_key=True),  # ULID
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(32), nullable=False),
    Column("projects", JSON, nullable=False, default=list),
    Column("phone", String(32), nullable=True),
    Column("password_hash", String(255), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Double, nullable=False),
    Column("created_by", USER_ID, nullable=True),
    Column("password_changed_at", Double, nullable=True),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", Double, nullable=True),
    Column("language", String(8), nullable=True),
)

# Browser sessions. `id` is the SHA-256 of the cookie value (a stolen database does not hand
# out sessions); the CSRF token is per session and compared on every state-changing request.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(26), nullable=False, index=True),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=True),
    Column("csrf_token", String(64), nullable=False),
    Column("ip", String(64), nullable=True),
    Column("user_agent", String(255), nullable=True),
)

# Append-only: the application has no update or delete for it, and the migration installs
# triggers that make the database refuse UPDATE and DELETE too.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("ts", Double, nullable=False),
    Column("actor", USER_ID, nullable=True),
    Column("actor_role", String(32), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=True),
    Column("project", String(255), nullable=True),
    Column("result", String(16), nullable=False),
    Column("detail", JSON, nullable=True),
    Column("context_id", CONTEXT_ID, nullable=True),
    Index("ix_audit_log_ts", "ts"),
    Index("ix_audit_log_actor_ts", "actor", "ts"),
    Index("ix_audit_log_action_ts", "action", "ts"),
    Index("ix_audit_log_project_ts", "project", "ts"),
)

# -- notifications (hub/core/notify/; migration 0006_notify) ----------------------------------
# One row per message to one recipient over one channel. A failover to the next channel is a
# new row pointing at the failed one (`fallback_of`), so the API shows every attempt with its
# reason. `held` rows wait for a summary (quiet hours, rate limit) until `next_attempt_at`;
# queued/sending rows are resumed after a restart.
notify_deliveries = Table(
    "notify_deliveries",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("sent_at", Double, nullable=True),
    Column("alarm_id", BigInteger, nullable=True),
    Column("project", String(255), nullable=True),
    Column("recipient", String(64), nullable=False),
    Column("user_name", USER_ID, nullable=True),
    Column("channel", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("reason", String(500), nullable=True),
    Column("title", String(255), nullable=True),
    Column("message", Text, nullable=False),
    Column("language", String(8), nullable=True),
    Column("severity", String(16), nullable=True),
    Column("next_attempt_at", Double, nullable=True),
    Column("fallback_of", BigInteger, nullable=True),
    Column("reference", String(64), nullable=True),
    # message references (comma-separated, like `reference`) whose delivery report said
    # "delivered"; the record is `delivered` once every part of `reference` is here (0007)
    Column("reports", String(64), nullable=True),
    Index("ix_notify_deliveries_status", "status"),
    Index("ix_notify_deliveries_recipient_sent_at", "recipient", "sent_at"),
    Index("ix_notify_deliveries_alarm_id", "alarm_id"),
    Index("ix_notify_deliveries_created_at", "created_at"),
)

# What a user wants to hear about: projects (empty = the user's whole scope), alarm kinds,
# the lowest severity, channels (notifier names; empty = all), quiet hours, language.
notify_subscriptions = Table(
    "notify_subscriptions",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("user_id", String(26), nullable=False, index=True),
    Column("projects", JSON, nullable=False, default=list),
    Column("kinds", JSON, nullable=False, default=list),
    Column("min_severity", String(16), nullable=False, default="info"),
    Column("channels", JSON, nullable=False, default=list),
    Column("quiet_start", String(5), nullable=True),
    Column("quiet_end", String(5), nullable=True),
    Column("language", String(8), nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", Double, nullable=False),
    Column("created_by", USER_ID, nullable=True),
)

# Escalation chains still running: the next level and when it is due. Deleted when the alarm
# is acknowledged or cleared, or the chain has no level left.
notify_escalations = Table(
    "notify_escalations",
    metadata,
    Column("alarm_id", BigInteger, primary_key=True),
    Column("project", String(255), nullable=True),
    Column("level", Integer, nullable=False),
    Column("next_at", Double, nullable=False),
    Column("started_at", Double, nullable=False),
)

# -- automations (hub/core/automations/; migration 0005_automations) -------------------------
# Pending deadlines (`for:` timers and delays) that must survive a restart; one row each.
automation_timers = Table(
    "automation_timers",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("automation_id", String(128), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # for | delay
    Column("deadline", Double, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("data", JSON, nullable=True),
)

# Traces: the store keeps the last N per automation plus the latest of every outcome.
automation_traces = Table(
    "automation_traces",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("automation_id", String(128), nullable=False),
    Column("run_id", String(26), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    Column("trace", JSON, nullable=False),
    Index("ix_automation_traces_automation_id_id", "automation_id", "id"),
)

# Every edit of an automation (API create/update/delete/rollback): who, when, old and new text.
automation_versions = Table(
    "automation_versions",
    metadata,
    Column("id", BigIntPK, primary_key=True),
    Column("automation_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("action", String(16), nullable=False),
    Column("at", Double, nullable=False),
    Column("by", String(64), nullable=True),
    Column("old_text", Text, nullable=True),
    Column("new_text", Text, nullable=True),
    UniqueConstraint("automation_id", "version"),
)

# Leases (migration 0009): which worker owns a resource that only one of several workers may
# drive, e.g. a GSM DTU whose one TCP socket reached one worker. One row per resource; the
# primary key is what makes "one owner" hold across workers on one PostgreSQL. `expires_at` is
# the database's clock (seconds since the epoch): an owner renews it while it holds the
# resource, and a row past it belongs to nobody (a killed worker's ownership runs out).
leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("acquired_at", Double, nullable=False),
    Column("info", JSON, nullable=True),
)
