"""pools: reservation pools, their VMs with holders and leases, and the lease history

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pools",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("workspace_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("template", sa.JSON(), nullable=False),
        sa.Column("min_ready", sa.Integer(), nullable=False),
        sa.Column("max_size", sa.Integer(), nullable=False),
        sa.Column("lease_default", sa.Integer(), nullable=False),
        sa.Column("lease_max", sa.Integer(), nullable=False),
        sa.Column("on_checkin", sa.String(length=16), nullable=False),
        sa.Column("idle_timeout", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workspace_id", "name", name="uq_pools_workspace_name"),
    )
    op.create_index("ix_pools_workspace_id", "pools", ["workspace_id"])
    op.create_table(
        "pool_members",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("pool_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("holder_user_id", sa.String(length=36), nullable=True),
        sa.Column("holder", sa.String(length=128), nullable=True),
        sa.Column("checked_out_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("idle_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instance_id"),
    )
    op.create_index("ix_pool_members_pool_id", "pool_members", ["pool_id"])
    op.create_index("ix_pool_members_status", "pool_members", ["status"])
    op.create_index("ix_pool_members_lease_expires_at", "pool_members", ["lease_expires_at"])
    op.create_table(
        "pool_leases",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("pool_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.Column("instance_name", sa.String(length=63), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("holder_user_id", sa.String(length=36), nullable=True),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["pool_id"], ["pools.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_pool_leases_pool_id", "pool_leases", ["pool_id"])
    op.create_index("ix_pool_leases_instance_id", "pool_leases", ["instance_id"])
    op.create_index("ix_pool_leases_holder_user_id", "pool_leases", ["holder_user_id"])


def downgrade() -> None:
    for table in ("pool_leases", "pool_members", "pools"):
        op.drop_table(table)
