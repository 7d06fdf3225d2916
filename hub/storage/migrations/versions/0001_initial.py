"""Initial schema: history (states, events), registries, API tokens, key-value facts.

Written out table by table rather than via `metadata.create_all`, so this migration stays what
it was when later revisions change hub/storage/schema.py.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIGPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "states_meta",
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("metadata_id", name="pk_states_meta"),
        sa.UniqueConstraint("entity_id", name="uq_states_meta_entity_id"),
    )
    op.create_table(
        "state_attributes",
        sa.Column("attributes_id", _BIGPK, nullable=False),
        sa.Column("hash", sa.BigInteger(), nullable=False),
        sa.Column("shared_attrs", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("attributes_id", name="pk_state_attributes"),
    )
    op.create_index("ix_state_attributes_hash", "state_attributes", ["hash"])
    op.create_table(
        "states",
        sa.Column("state_id", _BIGPK, nullable=False),
        sa.Column("metadata_id", sa.Integer(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column("attributes_id", sa.BigInteger(), nullable=True),
        sa.Column("last_changed_ts", sa.Double(), nullable=True),
        sa.Column("last_updated_ts", sa.Double(), nullable=False),
        sa.Column("context_id", sa.String(26), nullable=True),
        sa.Column("context_user_id", sa.String(64), nullable=True),
        sa.Column("context_parent_id", sa.String(26), nullable=True),
        sa.PrimaryKeyConstraint("state_id", name="pk_states"),
        sa.ForeignKeyConstraint(
            ["metadata_id"],
            ["states_meta.metadata_id"],
            name="fk_states_metadata_id_states_meta",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["attributes_id"],
            ["state_attributes.attributes_id"],
            name="fk_states_attributes_id_state_attributes",
        ),
    )
    op.create_index(
        "ix_states_metadata_id_last_updated_ts", "states", ["metadata_id", "last_updated_ts"]
    )
    op.create_index("ix_states_last_updated_ts", "states", ["last_updated_ts"])
    op.create_index("ix_states_context_id", "states", ["context_id"])

    op.create_table(
        "events",
        sa.Column("event_id", _BIGPK, nullable=False),
        sa.Column("event_type", sa.String(255), nullable=False),
        sa.Column("event_data", sa.Text(), nullable=True),
        sa.Column("origin", sa.String(32), nullable=True),
        sa.Column("time_fired_ts", sa.Double(), nullable=False),
        sa.Column("context_id", sa.String(26), nullable=True),
        sa.Column("context_user_id", sa.String(64), nullable=True),
        sa.Column("context_parent_id", sa.String(26), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_events"),
    )
    op.create_index("ix_events_time_fired_ts", "events", ["time_fired_ts"])
    op.create_index(
        "ix_events_event_type_time_fired_ts", "events", ["event_type", "time_fired_ts"]
    )
    op.create_index("ix_events_context_id", "events", ["context_id"])

    op.create_table(
        "devices",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("profile", sa.String(255), nullable=True),
        sa.Column("project", sa.String(255), nullable=True),
        sa.Column("area", sa.String(255), nullable=True),
        sa.Column("location", sa.String(255), nullable=True),
        sa.Column("link", sa.JSON(), nullable=False),
        sa.Column("manufacturer", sa.String(255), nullable=True),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("firmware", sa.String(255), nullable=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_devices"),
    )
    op.create_index("ix_devices_project", "devices", ["project"])

    op.create_table(
        "entities",
        sa.Column("entity_id", sa.String(255), nullable=False),
        sa.Column("device_id", sa.String(255), nullable=True),
        sa.Column("unique_id", sa.String(255), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.Column("device_class", sa.String(64), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("entity_id", name="pk_entities"),
    )
    op.create_index("ix_entities_device_id", "entities", ["device_id"])

    op.create_table(
        "tokens",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])

    op.create_table(
        "kv",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_kv"),
    )


def downgrade() -> None:
    for table in ("kv", "tokens", "entities", "devices", "events", "states"):
        op.drop_table(table)
    op.drop_table("state_attributes")
    op.drop_table("states_meta")
