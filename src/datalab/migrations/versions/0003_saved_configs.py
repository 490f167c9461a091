"""saved launch configurations

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-23 20:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "saved_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("catalog_id", sa.String(length=63), nullable=False),
        sa.Column("chart_name", sa.String(length=63), nullable=False),
        sa.Column("chart_version", sa.String(length=63), nullable=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("owner_id", "project_id", "name"),
    )
    with op.batch_alter_table("saved_configs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_saved_configs_owner_id"), ["owner_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("saved_configs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_saved_configs_owner_id"))
    op.drop_table("saved_configs")
