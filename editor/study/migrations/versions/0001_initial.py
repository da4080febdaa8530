"""Initial schema: studies, study pairs, votes -- exactly what ``Base.metadata.create_all`` wrote before the store
had migrations, so a database from that time is stamped at this revision and upgraded from here.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
    )
    op.create_table(
        "study_pairs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pair_key", sa.String(64), nullable=False),
        sa.Column("clip_path", sa.Text(), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("variant_a", sa.String(100), nullable=False),
        sa.Column("variant_b", sa.String(100), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("rendered_a", sa.Text()),
        sa.Column("rendered_b", sa.Text()),
        sa.Column("is_gold", sa.Boolean(), nullable=False),
        sa.Column("gold_bad_side", sa.String(1)),
        sa.UniqueConstraint("study_id", "pair_key", name="uq_study_pairs_study_pair_key"),
        sa.CheckConstraint("gold_bad_side IS NULL OR gold_bad_side IN ('A', 'B')", name="ck_study_pairs_gold_side"),
    )
    op.create_index("ix_study_pairs_study_id", "study_pairs", ["study_id"])
    op.create_table(
        "votes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rater_id", sa.String(128), nullable=False),
        sa.Column("session_id", sa.String(128), nullable=False),
        sa.Column("app_version", sa.String(64), nullable=False),
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id", ondelete="SET NULL")),
        sa.Column("pair_id", sa.Integer(), sa.ForeignKey("study_pairs.id", ondelete="SET NULL")),
        sa.Column("pair_key", sa.String(64), nullable=False),
        sa.Column("clip_hash", sa.String(64), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("variant_a", sa.String(100), nullable=False),
        sa.Column("params_a", sa.JSON(), nullable=False),
        sa.Column("seed_a", sa.Integer()),
        sa.Column("timings_a", sa.JSON()),
        sa.Column("variant_b", sa.String(100), nullable=False),
        sa.Column("params_b", sa.JSON(), nullable=False),
        sa.Column("seed_b", sa.Integer()),
        sa.Column("timings_b", sa.JSON()),
        sa.Column("shown_left", sa.String(1), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("decide_ms", sa.Integer(), nullable=False),
        sa.UniqueConstraint("rater_id", "pair_key", name="uq_votes_rater_pair"),
        sa.CheckConstraint("choice IN ('A', 'B', 'tie', 'both_bad')", name="ck_votes_choice"),
        sa.CheckConstraint("shown_left IN ('A', 'B')", name="ck_votes_shown_left"),
        sa.CheckConstraint("decide_ms >= 0", name="ck_votes_decide_ms"),
    )
    op.create_index("ix_votes_created_at", "votes", ["created_at"])
    op.create_index("ix_votes_study_id", "votes", ["study_id"])


def downgrade() -> None:
    op.drop_table("votes")
    op.drop_table("study_pairs")
    op.drop_table("studies")
