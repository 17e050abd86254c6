"""replacement graphs: a saved graph may carry its whole adjacency (a transcoder set's replacement-model graph)

The page re-prunes a replacement graph at any node and edge thresholds from its stored adjacency, so the graph
row keeps it, compressed, beside the JSON; residual-SAE graphs leave it NULL.

Revision ID: 0011_replacement_graphs
Revises: 0010_one_explanation
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_replacement_graphs'
down_revision = '0010_one_explanation'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('attribution_graphs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('adjacency', sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('attribution_graphs', schema=None) as batch_op:
        batch_op.drop_column('adjacency')
