"""Facts about this deployment as a whole, kept in the database so that replicas share them."""

from __future__ import annotations

import secrets

from sqlalchemy.orm import Session

from cloudlet.db.models import Meta


def deployment_id(session: Session) -> str:
    """This deployment's id, made on first start; it labels every backend object cloudlet creates."""
    row = session.get(Meta, "deployment_id")
    if row is None:
        row = Meta(key="deployment_id", value=secrets.token_hex(8))
        session.add(row)
        session.flush()
    return row.value
