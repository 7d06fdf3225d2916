"""Alarm records and pending alarm delays (hub/core/alarms.py).

The partial unique index `ux_alarms_active_device_type` enforces one active record per
(device, type) in the database itself, so several hubs on one PostgreSQL cannot create
duplicates either; SQLite supports the same partial index.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alarms",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=True),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("area", sa.String(255), nullable=True),
        sa.Column("location", sa.String(255), nullable=True),
        sa.Column("device_name", sa.String(255), nullable=True),
        sa.Column("platform", sa.String(64), nullable=True),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("unit_address", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("message_en", sa.Text(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("unit", sa.String(16), nullable=True),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("latching", sa.Boolean(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("last_seen_at", sa.Double(), nullable=False),
        sa.Column("cleared_at", sa.Double(), nullable=True),
        sa.Column("cleared_by", sa.String(64), nullable=True),
        sa.Column("acked_at", sa.Double(), nullable=True),
        sa.Column("acked_by", sa.String(64), nullable=True),
        sa.Column("handled_at", sa.Double(), nullable=True),
        sa.Column("handled_by", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("context_id", sa.String(26), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alarms"),
    )
    op.create_index("ix_alarms_started_at", "alarms", ["started_at"])
    op.create_index("ix_alarms_device_id_started_at", "alarms", ["device_id", "started_at"])
    op.create_index("ix_alarms_project_started_at", "alarms", ["project", "started_at"])
    op.create_index("ix_alarms_status", "alarms", ["status"])
    op.create_index(
        "ux_alarms_active_device_type",
        "alarms",
        ["device_id", "type"],
        unique=True,
        sqlite_where=sa.text("status = 'active'"),
        postgresql_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "alarm_pending",
        sa.Column("device_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("noted_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "type", "entity_id", name="pk_alarm_pending"),
    )


def downgrade() -> None:
    op.drop_table("alarm_pending")
    op.drop_index("ux_alarms_active_device_type", table_name="alarms")
    op.drop_table("alarms")
