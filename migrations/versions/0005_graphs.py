"""graphs: saved attribution graphs (issue 15)

Revision ID: 0005_graphs
Revises: 0003_accounts
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_graphs'
down_revision = '0008_steering_measures'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('attribution_graphs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('set_key', sa.String(length=200), nullable=False),
    sa.Column('sae_ids', sa.JSON(), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('graph', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_attribution_graphs_owner_id_users'),
                            ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_attribution_graphs'))
    )
    with op.batch_alter_table('attribution_graphs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_attribution_graphs_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_attribution_graphs_set_key'), ['set_key'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('attribution_graphs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_attribution_graphs_set_key'))
        batch_op.drop_index(batch_op.f('ix_attribution_graphs_owner_id'))
    op.drop_table('attribution_graphs')
