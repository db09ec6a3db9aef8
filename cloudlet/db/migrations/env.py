"""Alembic environment: runs on the connection cloudlet hands over (see cloudlet.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloudlet.db.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # command-line use: `alembic -x url=... upgrade head`
    url = context.get_x_argument(as_dictionary=True)["url"]
    connection = create_engine(url).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
