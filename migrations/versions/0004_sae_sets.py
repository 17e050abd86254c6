"""sae sets: SAEs of one model at several sites, grouped (issue 15)

Revision ID: 0004_sae_sets
Revises: 0003_accounts
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004_sae_sets'
down_revision = '0003_accounts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sae_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sae_sets')),
    sa.UniqueConstraint('name', name=op.f('uq_sae_sets_name'))
    )
    with op.batch_alter_table('saes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('set_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_saes_set_id'), ['set_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_saes_set_id_sae_sets'), 'sae_sets', ['set_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('saes', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_saes_set_id_sae_sets'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_saes_set_id'))
        batch_op.drop_column('set_id')
    op.drop_table('sae_sets')
