"""Study pairs carry their clip's sha256 and what each side cost to render.

A vote on a study pair records the input clip's hash and both sides' timings like a live vote does
(docs/DESIGN.md section 6); the pre-rendering command knows both, the Rate tab does not, so they are stored with the
pair.  Both columns are nullable: pairs written before this revision have neither (the Rate tab hashes the clip
file then).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("study_pairs", sa.Column("clip_hash", sa.String(64)))
    op.add_column("study_pairs", sa.Column("timings", sa.JSON()))


def downgrade() -> None:
    # plain ALTER TABLE DROP COLUMN (SQLite >= 3.35): a batch table copy would drop study_pairs, and with
    # foreign keys on that sets every vote's pair_id to NULL
    op.drop_column("study_pairs", "timings")
    op.drop_column("study_pairs", "clip_hash")
