"""image properties: the guest OS and the smallest disk and memory an instance of it needs

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("os", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("min_disk", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("min_memory", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("min_memory")
        batch.drop_column("min_disk")
        batch.drop_column("os")
