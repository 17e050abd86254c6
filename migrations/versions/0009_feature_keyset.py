"""feature list keyset indexes: each sort column with feature_index, the key a million-feature list pages by (issue 22)

Revision ID: 0009_feature_keyset
Revises: 0007_explanations
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = '0009_feature_keyset'
down_revision = '0007_explanations'
branch_labels = None
depends_on = None

SORTS = ("density", "max_act", "mean_act")


def upgrade() -> None:
    with op.batch_alter_table('features', schema=None) as batch_op:
        batch_op.drop_index('ix_features_sae_density')
        batch_op.drop_index('ix_features_sae_max_act')
        for column in SORTS:
            batch_op.create_index(f'ix_features_sae_{column}_index', ['sae_id', column, 'feature_index'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('features', schema=None) as batch_op:
        for column in SORTS:
            batch_op.drop_index(f'ix_features_sae_{column}_index')
        batch_op.create_index('ix_features_sae_max_act', ['sae_id', 'max_act'], unique=False)
        batch_op.create_index('ix_features_sae_density', ['sae_id', 'density'], unique=False)
