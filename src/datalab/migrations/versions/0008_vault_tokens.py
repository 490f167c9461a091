"""vault tokens: the accessors of the Vault tokens minted for users, revoked when one is disabled

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vault_tokens",
        sa.Column("accessor", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("accessor"),
    )
    op.create_index("ix_vault_tokens_user_id", "vault_tokens", ["user_id"])
    op.create_index("ix_vault_tokens_expires_at", "vault_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("vault_tokens")
