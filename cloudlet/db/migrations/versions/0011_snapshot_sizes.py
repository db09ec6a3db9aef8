"""snapshot sizes: the VM's vCPUs, memory and disk when the snapshot was taken

A revert brings those back (the qcow2 snapshot restores the disk's size, libvirt the domain's
vCPUs and memory), so the instance's recorded sizes must follow. Older snapshots have none.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("cpus", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("memory_mb", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("disk_gb", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("disk_gb")
        batch.drop_column("memory_mb")
        batch.drop_column("cpus")
