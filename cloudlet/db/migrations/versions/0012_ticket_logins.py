"""console ticket logins: the sign-in a console ticket was issued under

A ticket is checked again when it is redeemed: the API token or the sign-in it came from must
still be live, so signing out, a password change or a removal from the workspace ends the
tickets issued before. Tickets live 30 seconds, so older rows need no value.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("console_tickets") as batch:
        batch.add_column(sa.Column("login_id", sa.String(36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("console_tickets") as batch:
        batch.drop_column("login_id")
