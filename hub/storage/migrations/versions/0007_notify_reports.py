"""Notifications: per-part delivery reports on delivery records.

A message of several SMS segments gets one status report per segment; the record is
`delivered` only when every segment was reported delivered. `reports` keeps the references
already reported (comma-separated, like `reference`), so a restart between two reports
does not forget the first.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notify_deliveries") as batch:
        batch.add_column(sa.Column("reports", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notify_deliveries") as batch:
        batch.drop_column("reports")
