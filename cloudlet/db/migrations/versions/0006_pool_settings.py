"""pool settings (the replaced system's API per pool), pool VMs' names and addresses kept with
them (a checkout or check-in by IP reads one row), and named leader locks for controllers

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch_op:
        batch_op.add_column(sa.Column("legacy_api", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("pool_members") as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column("ip", sa.String(length=64), nullable=True))
        batch_op.create_index("ix_pool_members_ip", ["ip"])
    op.execute(
        "UPDATE pool_members SET"
        " name = (SELECT name FROM instances WHERE instances.id = pool_members.instance_id),"
        " ip = (SELECT address FROM ip_allocations AS a WHERE a.instance_id = pool_members.instance_id)"
    )
    op.create_table(
        "leader_locks",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leader_locks")
    with op.batch_alter_table("pool_members") as batch_op:
        batch_op.drop_index("ix_pool_members_ip")
        batch_op.drop_column("ip")
        batch_op.drop_column("name")
    with op.batch_alter_table("pools") as batch_op:
        batch_op.drop_column("legacy_api")
