"""explanations: draft labels written by an explainer model, with their scores and review (issue 17)

Revision ID: 0007_explanations
Revises: 0006_feature_map
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007_explanations'
down_revision = '0006_feature_map'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('explanations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('explainer_model', sa.String(length=200), nullable=False),
    sa.Column('scorer_model', sa.String(length=200), nullable=False),
    sa.Column('prompt_version', sa.String(length=32), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('label_id', sa.Integer(), nullable=True),
    sa.Column('reviewer_id', sa.Integer(), nullable=True),
    sa.Column('reviewed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_explanations_sae_id_saes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_id'], ['labels.id'], name=op.f('fk_explanations_label_id_labels'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], name=op.f('fk_explanations_reviewer_id_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_explanations'))
    )
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.create_index('ix_explanations_feature', ['sae_id', 'feature_index'], unique=False)
        batch_op.create_index('ix_explanations_sae_score', ['sae_id', 'score'], unique=False)
        batch_op.create_index(batch_op.f('ix_explanations_label_id'), ['label_id'], unique=False)


def downgrade() -> None:
    op.drop_table('explanations')
