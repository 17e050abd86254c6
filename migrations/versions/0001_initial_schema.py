"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('saes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('model_name', sa.String(length=200), nullable=False),
    sa.Column('model_spec', sa.String(length=500), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('hook_name', sa.String(length=64), nullable=False),
    sa.Column('architecture', sa.String(length=32), nullable=False),
    sa.Column('d_in', sa.Integer(), nullable=False),
    sa.Column('d_sae', sa.Integer(), nullable=False),
    sa.Column('k', sa.Integer(), nullable=True),
    sa.Column('source_path', sa.String(length=1000), nullable=False),
    sa.Column('source_format', sa.String(length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('eval_metrics', sa.JSON(), nullable=False),
    sa.Column('training_log', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dataset', sa.String(length=200), nullable=True),
    sa.Column('n_tokens', sa.BigInteger(), nullable=True),
    sa.Column('n_contexts', sa.Integer(), nullable=True),
    sa.Column('record_config', sa.JSON(), nullable=True),
    sa.Column('density_histogram', sa.JSON(), nullable=True),
    sa.Column('dead_count', sa.Integer(), nullable=True),
    sa.Column('dense_count', sa.Integer(), nullable=True),
    sa.Column('mean_l0', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_saes')),
    sa.UniqueConstraint('name', name=op.f('uq_saes_name'))
    )
    op.create_table('tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tags')),
    sa.UniqueConstraint('name', name=op.f('uq_tags_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('name', name=op.f('uq_users_name'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('bookmark_lists',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_bookmark_lists_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bookmark_lists')),
    sa.UniqueConstraint('owner_id', 'name', name=op.f('uq_bookmark_lists_owner_id_name'))
    )
    op.create_table('contexts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('context_index', sa.Integer(), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('token_ids', sa.LargeBinary(), nullable=False),
    sa.Column('pieces', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_contexts_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contexts')),
    sa.UniqueConstraint('sae_id', 'context_index', 'start', name=op.f('uq_contexts_sae_id_context_index_start'))
    )
    op.create_table('feature_tags',
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('tag_id', sa.Integer(), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_feature_tags_author_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_feature_tags_sae_id_saes'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tag_id'], ['tags.id'], name=op.f('fk_feature_tags_tag_id_tags'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sae_id', 'feature_index', 'tag_id', name=op.f('pk_feature_tags'))
    )
    with op.batch_alter_table('feature_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_feature_tags_tag_id'), ['tag_id'], unique=False)

    op.create_table('features',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('density', sa.Float(), nullable=False),
    sa.Column('fire_count', sa.BigInteger(), nullable=False),
    sa.Column('max_act', sa.Float(), nullable=False),
    sa.Column('mean_act', sa.Float(), nullable=False),
    sa.Column('is_dead', sa.Boolean(), nullable=False),
    sa.Column('is_dense', sa.Boolean(), nullable=False),
    sa.Column('hist', sa.JSON(), nullable=False),
    sa.Column('promoted', sa.JSON(), nullable=False),
    sa.Column('suppressed', sa.JSON(), nullable=False),
    sa.Column('neighbours', sa.JSON(), nullable=False),
    sa.Column('top_text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_features_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_features')),
    sa.UniqueConstraint('sae_id', 'feature_index', name=op.f('uq_features_sae_id_feature_index'))
    )
    with op.batch_alter_table('features', schema=None) as batch_op:
        batch_op.create_index('ix_features_sae_density', ['sae_id', 'density'], unique=False)
        batch_op.create_index('ix_features_sae_max_act', ['sae_id', 'max_act'], unique=False)

    op.create_table('labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_labels_author_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_labels_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_labels'))
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index('ix_labels_feature', ['sae_id', 'feature_index', 'id'], unique=False)

    op.create_table('steering_experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=True),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('prompt', sa.Text(), nullable=False),
    sa.Column('interventions', sa.JSON(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('baseline_text', sa.Text(), nullable=True),
    sa.Column('steered_text', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_steering_experiments_owner_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_steering_experiments_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_steering_experiments'))
    )
    with op.batch_alter_table('steering_experiments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_steering_experiments_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_steering_experiments_sae_id'), ['sae_id'], unique=False)

    op.create_table('bookmarks',
    sa.Column('list_id', sa.Integer(), nullable=False),
    sa.Column('sae_id', sa.Integer(), nullable=False),
    sa.Column('feature_index', sa.Integer(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['list_id'], ['bookmark_lists.id'], name=op.f('fk_bookmarks_list_id_bookmark_lists'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['sae_id'], ['saes.id'], name=op.f('fk_bookmarks_sae_id_saes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('list_id', 'sae_id', 'feature_index', name=op.f('pk_bookmarks'))
    )
    op.create_table('examples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('feature_id', sa.Integer(), nullable=False),
    sa.Column('context_id', sa.Integer(), nullable=False),
    sa.Column('interval', sa.SmallInteger(), nullable=True),
    sa.Column('rank', sa.SmallInteger(), nullable=False),
    sa.Column('peak', sa.SmallInteger(), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('acts', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['context_id'], ['contexts.id'], name=op.f('fk_examples_context_id_contexts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['feature_id'], ['features.id'], name=op.f('fk_examples_feature_id_features'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_examples'))
    )
    with op.batch_alter_table('examples', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_examples_context_id'), ['context_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_examples_feature_id'), ['feature_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('examples', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_examples_feature_id'))
        batch_op.drop_index(batch_op.f('ix_examples_context_id'))

    op.drop_table('examples')
    op.drop_table('bookmarks')
    with op.batch_alter_table('steering_experiments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_steering_experiments_sae_id'))
        batch_op.drop_index(batch_op.f('ix_steering_experiments_owner_id'))

    op.drop_table('steering_experiments')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index('ix_labels_feature')

    op.drop_table('labels')
    with op.batch_alter_table('features', schema=None) as batch_op:
        batch_op.drop_index('ix_features_sae_max_act')
        batch_op.drop_index('ix_features_sae_density')

    op.drop_table('features')
    with op.batch_alter_table('feature_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_feature_tags_tag_id'))

    op.drop_table('feature_tags')
    op.drop_table('contexts')
    op.drop_table('bookmark_lists')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('tags')
    op.drop_table('saes')
