"""label and score sort keyset indexes: the label sort reads labels in (label start, feature index) order, the
score sort explanations in (score, feature index) order, so their pages go by key at a million features (issue 22)

A label's first 200 characters, not the whole text: a label may be longer than a PostgreSQL B-tree entry allows.

Revision ID: 0012_label_score_keyset
Revises: 0011_replacement_graphs
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_label_score_keyset'
down_revision = '0011_replacement_graphs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index('ix_labels_sort', ['sae_id', sa.text('substr(text, 1, 200)'), 'feature_index'],
                              unique=False)
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index('ix_explanations_sae_score')
        batch_op.create_index('ix_explanations_sae_score', ['sae_id', 'score', 'feature_index'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index('ix_explanations_sae_score')
        batch_op.create_index('ix_explanations_sae_score', ['sae_id', 'score'], unique=False)
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ix_labels_sort')
