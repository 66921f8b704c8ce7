"""partial index of open outbox commands

Revision ID: a7632dae6945
Revises: 1e16a6b687d1
Create Date: 2026-11-23 09:41:47.377261
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'a7632dae6945'
down_revision: str | None = '1e16a6b687d1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox_commands', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_open_by_deadline', ['deadline', 'not_before'], unique=False, postgresql_where=sa.text("status IN ('pending', 'running')"), sqlite_where=sa.text("status IN ('pending', 'running')"))



def downgrade() -> None:
    with op.batch_alter_table('outbox_commands', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_open_by_deadline', postgresql_where=sa.text("status IN ('pending', 'running')"), sqlite_where=sa.text("status IN ('pending', 'running')"))

