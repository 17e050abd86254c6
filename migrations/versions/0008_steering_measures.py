"""steering directions: named contrastive vectors at an SAE's site (issue 18)

Revision ID: 0008_steering_measures
Revises: 0003_accounts
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_steering_measures'
down_revision = '0004_sae_sets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('steering_directions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('vector', sa.JSON(), nullable=False),
    sa.Column('norm', sa.Float(), nullable=False),
    sa.Column('texts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_steering_directions_owner_id_users'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_steering_directions_sae_id_saes'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_steering_directions')),
    sa.UniqueConstraint('sae_id', 'name', name=op.f('uq_steering_directions_sae_id_name'))
    )
    with op.batch_alter_table('steering_directions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_steering_directions_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_steering_directions_sae_id'), ['sae_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('steering_directions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_steering_directions_sae_id'))
        batch_op.drop_index(batch_op.f('ix_steering_directions_owner_id'))
    op.drop_table('steering_directions')
