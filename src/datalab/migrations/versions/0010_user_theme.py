"""user theme: light, dark or system (the web UI's colours, and user.darkMode in services'
context); system_dark: the colour scheme the user's browser last reported, for "system"

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 00:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("theme", sa.String(length=8), nullable=False, server_default="system")
        )
        batch.add_column(
            sa.Column("system_dark", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("system_dark")
        batch.drop_column("theme")
