"""Networks and their address allocations."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from cloudlet.api.deps import CanCreateNetworks, CanDeleteNetworks, CanViewNetworks, CloudDep, ReadSession
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.schemas import NetworkCreate, NetworkPublic, OperationPublic
from cloudlet.db.models import Network
from cloudlet.services.cloud import Cloud

router = APIRouter(prefix="/networks", tags=["networks"])


def network_public(cloud: Cloud, session: Session, net: Network) -> NetworkPublic:
    usage = cloud.networks.usage(session, net)
    return NetworkPublic(
        id=net.id,
        name=net.name,
        cidr=net.cidr,
        mode=net.mode,
        gateway=net.gateway,
        bridge=net.bridge,
        status=net.status,
        addresses_total=usage["total"],
        addresses_used=usage["used"],
        created_at=net.created_at,
    )


@router.get("", response_model=list[NetworkPublic])
def list_networks(cloud: CloudDep, session: ReadSession, ctx: CanViewNetworks) -> list[NetworkPublic]:
    """List the workspace's networks with their address usage."""
    return [network_public(cloud, session, n) for n in cloud.networks.all(session, ctx)]


@router.post("", status_code=202, response_model=OperationPublic)
def create_network(
    body: NetworkCreate,
    cloud: CloudDep,
    ctx: CanCreateNetworks,
    response: Response,
    wait: float | None = WaitParam,
) -> OperationPublic:
    """Create a NAT or isolated network whose addresses cloudlet hands out."""
    return accepted(cloud, ctx, cloud.networks.create(ctx, body.name, body.cidr, body.mode), wait, response)


@router.get("/{ref}", response_model=NetworkPublic)
def get_network(cloud: CloudDep, session: ReadSession, ctx: CanViewNetworks, ref: str) -> NetworkPublic:
    """Show a network by name or id."""
    return network_public(cloud, session, cloud.networks.get(session, ctx, ref))


@router.delete("/{ref}", status_code=202, response_model=OperationPublic)
def delete_network(
    cloud: CloudDep, ctx: CanDeleteNetworks, ref: str, response: Response, wait: float | None = WaitParam
) -> OperationPublic:
    """Delete a network (409 while instances use it)."""
    return accepted(cloud, ctx, cloud.networks.delete(ctx, ref), wait, response)
