"""Initial schema of the egress service.

Revision ID: 0001
Revises:
Create Date: 2026-11-29

Frozen: a migration never imports the models (they change; this must not).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _fk_request(table: str, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["request_id"],
        ["requests.id"],
        name=op.f(f"fk_{table}_request_id_requests"),
        ondelete=ondelete,
    )


def _index(table: str, *columns: str, name: str | None = None) -> None:
    with op.batch_alter_table(table) as batch:
        batch.create_index(
            name or batch.f(f"ix_{table}_{'_'.join(columns)}"), list(columns), unique=False
        )


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", sa.String(length=16), nullable=False),
        sa.Column("project", sa.String(length=32), nullable=False),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("reviews_required", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
        _time("submitted_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_requests")),
    )
    _index("requests", "author")
    _index("requests", "project")
    _index("requests", "state")

    op.create_table(
        "file_groups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("controls", sa.Text(), nullable=False),
        _fk_request("file_groups"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_file_groups")),
        sa.UniqueConstraint("request_id", "name", name=op.f("uq_file_groups_request_id_name")),
    )
    _index("file_groups", "request_id")

    op.create_table(
        "request_files",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("group", sa.String(length=100), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("release_sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("release_size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("check", sa.JSON(), nullable=False),
        _time("added_at"),
        sa.Column("changed_in_round", sa.Integer(), nullable=False),
        _fk_request("request_files"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_files")),
        sa.UniqueConstraint("request_id", "path", name=op.f("uq_request_files_request_id_path")),
    )
    _index("request_files", "request_id")

    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("vote", sa.String(length=20), nullable=False),
        _time("updated_at"),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["request_files.id"],
            name=op.f("fk_votes_file_id_request_files"),
            ondelete="CASCADE",
        ),
        _fk_request("votes"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint(
            "file_id", "reviewer", "round", name=op.f("uq_votes_file_id_reviewer_round")
        ),
    )
    _index("votes", "request_id")

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("reviewer", sa.String(length=64), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        _time("submitted_at"),
        _fk_request("reviews"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint(
            "request_id", "reviewer", "round", name=op.f("uq_reviews_request_id_reviewer_round")
        ),
    )

    op.create_table(
        "comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        sa.Column("file_id", sa.Integer(), nullable=True),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        sa.Column("during_review", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"],
            ["request_files.id"],
            name=op.f("fk_comments_file_id_request_files"),
            ondelete="SET NULL",
        ),
        _fk_request("comments"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    _index("comments", "request_id")

    op.create_table(
        "audit_events",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("project", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=16), nullable=True),
        sa.Column("time", sa.String(length=27), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
    )
    _index("audit_events", "request_id")

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("log_id", sa.String(length=100), nullable=False),
        sa.Column("head_seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )

    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=16), nullable=False),
        _time("released_at"),
        sa.Column("released_by", sa.String(length=64), nullable=False),
        sa.Column("record_json", sa.Text(), nullable=False),
        _fk_request("releases", ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint("request_id", name=op.f("uq_releases_request_id")),
    )

    op.create_table(
        "notifications_outbox",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("to", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        _time("created_at"),
        _time("sent_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications_outbox")),
    )
    _index("notifications_outbox", "sent_at", "attempts", name="ix_notifications_outbox_pending")


def downgrade() -> None:
    for table in (
        "notifications_outbox",
        "releases",
        "audit_log",
        "audit_events",
        "comments",
        "reviews",
        "votes",
        "request_files",
        "file_groups",
        "requests",
    ):
        op.drop_table(table)
