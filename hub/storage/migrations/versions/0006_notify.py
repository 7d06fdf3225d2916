"""Notifications: delivery records, subscriptions and running escalation chains.

Revision ID: 0006
Revises: 0005
Create Date: 2025-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "notify_deliveries",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("sent_at", sa.Double(), nullable=True),
        sa.Column("alarm_id", sa.BigInteger(), nullable=True),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("recipient", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("title", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("next_attempt_at", sa.Double(), nullable=True),
        sa.Column("fallback_of", sa.BigInteger(), nullable=True),
        sa.Column("reference", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notify_deliveries"),
    )
    op.create_index("ix_notify_deliveries_status", "notify_deliveries", ["status"])
    op.create_index("ix_notify_deliveries_recipient_sent_at", "notify_deliveries",
                    ["recipient", "sent_at"])
    op.create_index("ix_notify_deliveries_alarm_id", "notify_deliveries", ["alarm_id"])
    op.create_index("ix_notify_deliveries_created_at", "notify_deliveries", ["created_at"])
    op.create_table(
        "notify_subscriptions",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("user_id", sa.String(26), nullable=False),
        sa.Column("projects", sa.JSON(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("min_severity", sa.String(16), nullable=False),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("quiet_start", sa.String(5), nullable=True),
        sa.Column("quiet_end", sa.String(5), nullable=True),
        sa.Column("language", sa.String(8), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notify_subscriptions"),
    )
    op.create_index("ix_notify_subscriptions_user_id", "notify_subscriptions", ["user_id"])
    op.create_table(
        "notify_escalations",
        sa.Column("alarm_id", sa.BigInteger(), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("alarm_id", name="pk_notify_escalations"),
    )


def downgrade() -> None:
    op.drop_table("notify_escalations")
    op.drop_index("ix_notify_subscriptions_user_id", table_name="notify_subscriptions")
    op.drop_table("notify_subscriptions")
    for name in ("created_at", "alarm_id", "recipient_sent_at", "status"):
        op.drop_index(f"ix_notify_deliveries_{name}", table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
