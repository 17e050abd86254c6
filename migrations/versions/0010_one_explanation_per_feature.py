"""one explanation per feature: a unique (sae_id, feature_index), so that two explain jobs never store a feature twice

Two jobs over the same SAE (the CLI beside the web app, or two web workers, whose one-job rule is per process)
each plan the features that have no explanation yet, so both could draft the same feature. The unique index makes
the second store a no-op (app.crud.explanations.add_explanation).

Revision ID: 0010_one_explanation
Revises: 0009_feature_keyset
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_one_explanation'
down_revision = '0009_feature_keyset'
branch_labels = None
depends_on = None


def upgrade() -> None:
    doubled = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM (SELECT sae_id, feature_index FROM explanations "
        "GROUP BY sae_id, feature_index HAVING count(*) > 1) AS d")).scalar_one()
    if doubled:  # only concurrent jobs made these; which draft to keep is the researchers' call, not ours
        raise RuntimeError(
            f"{doubled} features have more than one explanation (two explain jobs ran at once). Keep one per "
            "feature (e.g. DELETE FROM explanations WHERE id NOT IN (SELECT min(id) FROM explanations GROUP BY "
            "sae_id, feature_index)), then upgrade again; nothing was changed")
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index('ix_explanations_feature')
        batch_op.create_index('ix_explanations_feature', ['sae_id', 'feature_index'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('explanations', schema=None) as batch_op:
        batch_op.drop_index('ix_explanations_feature')
        batch_op.create_index('ix_explanations_feature', ['sae_id', 'feature_index'], unique=False)
