"""Pairs live on the server: ``shown_pairs`` keyed by a pair token, ``votes.pair_token`` unique, 64-bit seeds.

A vote used to carry its pair (variants, params, seeds, sides) from the client, so a client could store any
comparison it liked (issue #34).  Now the server records every pair it shows under an unguessable token bound to
one rater, and a vote names only that token (docs/DESIGN.md section 6): ``UNIQUE(votes.pair_token)`` makes a token
good for one vote (older votes have none: NULLs never collide).  Seeds reach 2**32 - 1, beyond PostgreSQL's
INTEGER, so the seed columns become BIGINT there (SQLite's INTEGER is 64-bit already; nothing to do).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEED = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "shown_pairs",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rater_id", sa.String(128), nullable=False),
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id", ondelete="CASCADE")),
        sa.Column("study_pair_id", sa.Integer(), sa.ForeignKey("study_pairs.id", ondelete="CASCADE")),
        sa.Column("pair_key", sa.String(64), nullable=False),
        sa.Column("clip_hash", sa.String(64), nullable=False),
        sa.Column("instruction", sa.Text(), nullable=False),
        sa.Column("variant_a", sa.String(100), nullable=False),
        sa.Column("params_a", sa.JSON(), nullable=False),
        sa.Column("seed_a", SEED),
        sa.Column("timings_a", sa.JSON()),
        sa.Column("variant_b", sa.String(100), nullable=False),
        sa.Column("params_b", sa.JSON(), nullable=False),
        sa.Column("seed_b", SEED),
        sa.Column("timings_b", sa.JSON()),
        sa.Column("shown_left", sa.String(1), nullable=False),
        sa.CheckConstraint("shown_left IN ('A', 'B')", name="ck_shown_pairs_shown_left"),
    )
    op.create_index("ix_shown_pairs_rater_study_pair", "shown_pairs", ["rater_id", "study_pair_id"])
    op.add_column("votes", sa.Column("pair_token", sa.String(64)))
    op.create_index("uq_votes_pair_token", "votes", ["pair_token"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        for column in ("seed_a", "seed_b"):
            op.alter_column("votes", column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for column in ("seed_a", "seed_b"):
            op.alter_column("votes", column, type_=sa.Integer(), existing_type=sa.BigInteger())
    op.drop_index("uq_votes_pair_token", table_name="votes")
    # plain ALTER TABLE DROP COLUMN (SQLite >= 3.35), as in 0002: no batch copy of the votes table
    op.drop_column("votes", "pair_token")
    op.drop_index("ix_shown_pairs_rater_study_pair", table_name="shown_pairs")
    op.drop_table("shown_pairs")
