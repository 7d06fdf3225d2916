"""Work orders (with their history and photos), patrol templates and rounds, reminders sent.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "workorders",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("alarm_id", sa.BigInteger(), nullable=True),
        sa.Column("patrol_id", sa.BigInteger(), nullable=True),
        sa.Column("patrol_item", sa.String(255), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=True),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("assignee", sa.String(255), nullable=True),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("due_at", sa.Double(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("dispatched_at", sa.Double(), nullable=True),
        sa.Column("accepted_at", sa.Double(), nullable=True),
        sa.Column("repaired_at", sa.Double(), nullable=True),
        sa.Column("verified_at", sa.Double(), nullable=True),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("context_id", sa.String(26), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workorders"),
    )
    op.create_index("ix_workorders_status_due_at", "workorders", ["status", "due_at"])
    op.create_index("ix_workorders_project_created_at", "workorders", ["project", "created_at"])
    op.create_index("ix_workorders_created_at", "workorders", ["created_at"])
    op.create_index("ix_workorders_assignee", "workorders", ["assignee"])
    op.create_index("ix_workorders_device_id", "workorders", ["device_id"])
    op.create_index("ix_workorders_patrol_id", "workorders", ["patrol_id"])
    where = sa.text("status <> 'closed' AND alarm_id IS NOT NULL")
    op.create_index("ux_workorders_open_alarm", "workorders", ["alarm_id"], unique=True,
                    sqlite_where=where, postgresql_where=where)

    op.create_table(
        "workorder_events",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("workorder_id", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["workorder_id"], ["workorders.id"], ondelete="CASCADE",
                                name="fk_workorder_events_workorder_id_workorders"),
        sa.PrimaryKeyConstraint("id", name="pk_workorder_events"),
    )
    op.create_index("ix_workorder_events_workorder_id_at", "workorder_events",
                    ["workorder_id", "at"])

    op.create_table(
        "workorder_photos",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("workorder_id", sa.BigInteger(), nullable=False),
        sa.Column("file_name", sa.String(64), nullable=False),
        sa.Column("original_name", sa.String(255), nullable=True),
        sa.Column("content_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("uploaded_by", sa.String(255), nullable=True),
        sa.Column("uploaded_at", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["workorder_id"], ["workorders.id"], ondelete="CASCADE",
                                name="fk_workorder_photos_workorder_id_workorders"),
        sa.PrimaryKeyConstraint("id", name="pk_workorder_photos"),
    )
    op.create_index("ix_workorder_photos_workorder_id", "workorder_photos", ["workorder_id"])

    op.create_table(
        "patrol_templates",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("interval", sa.Double(), nullable=True),
        sa.Column("start_at", sa.Double(), nullable=False),
        sa.Column("allowed", sa.Double(), nullable=True),
        sa.Column("assignee", sa.String(255), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_due_at", sa.Double(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patrol_templates"),
    )
    op.create_index("ix_patrol_templates_project", "patrol_templates", ["project"])
    op.create_index("ix_patrol_templates_enabled_next_due_at", "patrol_templates",
                    ["enabled", "next_due_at"])

    op.create_table(
        "patrol_instances",
        sa.Column("id", _BIGPK, nullable=False),
        sa.Column("template_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("assignee", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scheduled_at", sa.Double(), nullable=False),
        sa.Column("due_at", sa.Double(), nullable=False),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.Column("completed_by", sa.String(255), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["template_id"], ["patrol_templates.id"], ondelete="CASCADE",
                                name="fk_patrol_instances_template_id_patrol_templates"),
        sa.PrimaryKeyConstraint("id", name="pk_patrol_instances"),
    )
    op.create_index("ux_patrol_instances_template_id_scheduled_at", "patrol_instances",
                    ["template_id", "scheduled_at"], unique=True)
    op.create_index("ix_patrol_instances_status_due_at", "patrol_instances",
                    ["status", "due_at"])
    op.create_index("ix_patrol_instances_project_scheduled_at", "patrol_instances",
                    ["project", "scheduled_at"])

    op.create_table(
        "reminders_sent",
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("object_id", sa.BigInteger(), nullable=False),
        sa.Column("threshold_at", sa.Double(), nullable=False),
        sa.Column("first_sent_at", sa.Double(), nullable=False),
        sa.Column("last_sent_at", sa.Double(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("reason", "object_id", name="pk_reminders_sent"),
    )


def downgrade() -> None:
    op.drop_table("reminders_sent")
    op.drop_table("patrol_instances")
    op.drop_table("patrol_templates")
    op.drop_table("workorder_photos")
    op.drop_table("workorder_events")
    op.drop_index("ux_workorders_open_alarm", table_name="workorders")
    op.drop_table("workorders")
