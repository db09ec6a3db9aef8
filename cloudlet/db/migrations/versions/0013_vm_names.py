"""VM names wider than DNS labels; OS Cloud ids used once only

A VM may now be named ``my_vm`` or ``Test.VM``; its hostname is derived from the name and
claimed in ``instances.dns_name`` (unique per workspace), so two names giving one hostname cannot
both have it. Until now every VM's hostname was its name unless chosen apart: those rows claim it.

``oscloud_ids`` numbers VMs for the OS Cloud API. On SQLite a plain integer key hands out
max(id)+1 again once the newest VM is deleted: the table is made again with AUTOINCREMENT, which
never reuses a number (PostgreSQL's sequence never did). Numbers freed before this migration are
not known any more; from here on none is given twice.

Revision ID: 0013
Revises: 0012
Create Date: 2027-01-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("dns_name", sa.String(63), nullable=True))
    op.execute(sa.text("UPDATE instances SET dns_name = hostname WHERE kind = 'vm' AND hostname = name"))
    op.create_index("uq_instances_workspace_dns_name", "instances", ["workspace_id", "dns_name"], unique=True)
    if op.get_bind().dialect.name == "sqlite":
        op.create_table(
            "_oscloud_ids_new",
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column("instance_id", sa.String(length=36), nullable=False),
            sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("instance_id"),
            sqlite_autoincrement=True,
        )
        op.execute(
            sa.text("INSERT INTO _oscloud_ids_new (id, instance_id) SELECT id, instance_id FROM oscloud_ids")
        )
        op.drop_table("oscloud_ids")
        op.rename_table("_oscloud_ids_new", "oscloud_ids")


def downgrade() -> None:
    op.drop_index("uq_instances_workspace_dns_name", table_name="instances")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("dns_name")
