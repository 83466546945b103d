"""Viewed files: a checker's "viewed" tick per file, kept on the server (issue #20).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07

Frozen: a migration never imports the models (they change; this must not).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "viewed_files",
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("checker", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("release_sha256", sa.String(length=64), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["request_files.id"],
            name=op.f("fk_viewed_files_file_id_request_files"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.id"],
            name=op.f("fk_viewed_files_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("file_id", "checker", name=op.f("pk_viewed_files")),
    )
    with op.batch_alter_table("viewed_files") as batch:
        batch.create_index(batch.f("ix_viewed_files_request_id"), ["request_id"], unique=False)


def downgrade() -> None:
    op.drop_table("viewed_files")
