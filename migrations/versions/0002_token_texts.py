"""token texts per SAE, filled from the stored windows

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from app.packing import unpack_ids

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade() -> None:
    op.create_table('token_texts',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_token_texts_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', 'token_id', name=op.f('pk_token_texts'))
    )
    _fill_from_windows()


def _fill_from_windows() -> None:
    """A store recorded before this table existed: each window's (token id, piece) pairs hold the texts."""
    bind = op.get_bind()
    contexts = sa.table('contexts', sa.column('sae_id'), sa.column('token_ids'), sa.column('pieces', sa.JSON()))
    token_texts = sa.table('token_texts', sa.column('sae_id'), sa.column('token_id'), sa.column('text'))
    seen: dict[tuple[int, int], str] = {}
    for sae_id, ids, pieces in bind.execute(sa.select(contexts.c.sae_id, contexts.c.token_ids, contexts.c.pieces)):
        for token_id, piece in zip(unpack_ids(ids), pieces):
            seen.setdefault((sae_id, token_id), piece)
    rows = [{"sae_id": s, "token_id": t, "text": text} for (s, t), text in seen.items()]
    for start in range(0, len(rows), BATCH):
        bind.execute(sa.insert(token_texts), rows[start:start + BATCH])


def downgrade() -> None:
    op.drop_table('token_texts')
