"""feature map: map runs, points, clusters, cluster labels, co-activation

Revision ID: 0006_feature_map
Revises: 0005_graphs
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_feature_map'
down_revision = '0005_graphs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('membership', sa.String(length=16), nullable=False),
    sa.Column('cluster', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_cluster_labels_author_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_cluster_labels_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cluster_labels'))
    )
    with op.batch_alter_table('cluster_labels', schema=None) as batch_op:
        batch_op.create_index('ix_cluster_labels_cluster', ['sae_id', 'membership', 'cluster', 'id'], unique=False)

    op.create_table('coactivations',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('partners', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_coactivations_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', 'feature_index', name=op.f('pk_coactivations'))
    )
    op.create_table('feature_maps',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('membership', sa.String(length=16), nullable=False),
    sa.Column('n_clusters', sa.Integer(), nullable=False),
    sa.Column('n_noise', sa.Integer(), nullable=False),
    sa.Column('n_dead', sa.Integer(), nullable=False),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_feature_maps_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', name=op.f('pk_feature_maps'))
    )
    op.create_table('map_clusters',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('x', sa.Float(), nullable=False),
    sa.Column('y', sa.Float(), nullable=False),
    sa.Column('top_tokens', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_map_clusters_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', 'cluster', name=op.f('pk_map_clusters'))
    )
    op.create_table('map_points',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('x', sa.Float(), nullable=True),
    sa.Column('y', sa.Float(), nullable=True),
    sa.Column('cluster', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_map_points_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', 'feature_index', name=op.f('pk_map_points'))
    )
    with op.batch_alter_table('map_points', schema=None) as batch_op:
        batch_op.create_index('ix_map_points_sae_cluster', ['sae_id', 'cluster'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('map_points', schema=None) as batch_op:
        batch_op.drop_index('ix_map_points_sae_cluster')

    op.drop_table('map_points')
    op.drop_table('map_clusters')
    op.drop_table('feature_maps')
    op.drop_table('coactivations')
    with op.batch_alter_table('cluster_labels', schema=None) as batch_op:
        batch_op.drop_index('ix_cluster_labels_cluster')

    op.drop_table('cluster_labels')
