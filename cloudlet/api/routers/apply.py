"""Declarative set-ups: `POST /apply` makes the workspace match a document (or, with `dry_run`,
only says what would change). The document is cloudlet's own format (what `cloudlet apply -f
cloud.yaml` sends) or the "Launch from Config" JSON of the Cloud Management System cloudlet
replaces."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudlet.api.deps import CloudDep, Ctx
from cloudlet.api.routers.instances import container_request, vm_request
from cloudlet.api.routers.operations import WaitParam, accepted
from cloudlet.api.routers.pools import PoolCreate, pool_spec
from cloudlet.api.schemas import ContainerCreate, InstanceCreate, NetworkCreate, OperationPublic
from cloudlet.errors import Invalid
from cloudlet.services.apply import ContainerDef, Document, ImageDef, NetworkDef, VmDef

router = APIRouter(tags=["apply"])


class ImageFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    path: str = Field(description="A disk image or ISO on the server host, in an allowed import folder.")


class VmEntry(InstanceCreate):
    model_config = ConfigDict(extra="forbid")
    state: Literal["running", "stopped"] = "running"


class ContainerEntry(ContainerCreate):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["container"] = "container"
    state: Literal["running", "stopped"] = "running"


class CloudDocument(BaseModel):
    """cloudlet's format: what should exist in the workspace, by name."""

    model_config = ConfigDict(extra="forbid")
    networks: list[NetworkCreate] = Field(default_factory=list)
    images: list[ImageFile] = Field(default_factory=list)
    vms: list[VmEntry] = Field(default_factory=list)
    containers: list[ContainerEntry] = Field(default_factory=list)
    pools: list[PoolCreate] = Field(default_factory=list)


class LaunchConfig(BaseModel):
    """One VM of the replaced system's "Launch from Config" JSON."""

    model_config = ConfigDict(extra="forbid")
    name: str
    ram: int = Field(1024, description="MiB")
    cpu: int = 1
    disk: int = Field(10, description="GiB")
    iso: str | None = Field(None, description="Installer ISO on the server host.")
    image: str | None = Field(None, description="An image of the workspace, instead of an ISO.")
    network: str = "default"


class ApplyRequest(BaseModel):
    document: dict[str, Any] | list[dict[str, Any]] = Field(
        description="cloudlet's document (networks, images, vms, containers, pools), or Launch-from-"
        "Config VM definitions (one object or a list)."
    )
    dry_run: bool = Field(False, description="Only plan: say what would change.")


class ChangePublic(BaseModel):
    kind: str
    name: str
    action: str = Field(description="create | resize | start | stop | replace | update | conflict")
    detail: str = ""


class ApplyResult(BaseModel):
    changes: list[ChangePublic]
    operation: OperationPublic | None = Field(None, description="The apply, when there was something to do.")


def is_launch_config(document: dict[str, Any] | list[dict[str, Any]]) -> bool:
    """The replaced system's VM definitions carry ram/cpu/iso; cloudlet's documents never do."""
    items = document if isinstance(document, list) else [document]
    return bool(items) and all(isinstance(i, dict) and {"ram", "cpu", "iso"} & i.keys() for i in items)


def image_name_for(path: str) -> str:
    """An image name from an ISO's file name: lower case, [a-z0-9-], at most 63 characters."""
    stem = re.sub(r"[^a-z0-9]+", "-", PurePosixPath(path).stem.lower()).strip("-")
    return (stem or "iso")[:63].strip("-")


def from_launch_config(items: list[LaunchConfig]) -> CloudDocument:
    images: dict[str, ImageFile] = {}
    vms = []
    for item in items:
        if (item.iso is None) == (item.image is None):
            raise Invalid(f"VM {item.name!r}: give iso or image", code="invalid_document")
        image = item.image
        if item.iso is not None:
            image = image_name_for(item.iso)
            images.setdefault(item.iso, ImageFile(name=image, path=item.iso))
        vms.append(
            VmEntry(
                name=item.name,
                image=image or "",
                cpus=item.cpu,
                memory=item.ram,
                disk=item.disk,
                network=item.network,
            )
        )
    return CloudDocument(images=list(images.values()), vms=vms)


def parse_document(raw: dict[str, Any] | list[dict[str, Any]]) -> Document:
    """Validate either format into the service's document; 422 invalid_document otherwise."""
    try:
        if is_launch_config(raw):
            items = raw if isinstance(raw, list) else [raw]
            doc = from_launch_config([LaunchConfig.model_validate(i) for i in items])
        elif isinstance(raw, list):
            raise Invalid("a list must hold Launch-from-Config VM definitions", code="invalid_document")
        else:
            doc = CloudDocument.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()[:10])
        raise Invalid(f"the document is not valid: {problems}", code="invalid_document") from None
    return Document(
        networks=tuple(NetworkDef(n.name, n.cidr, n.mode) for n in doc.networks),
        images=tuple(ImageDef(i.name, i.path) for i in doc.images),
        vms=tuple(VmDef(vm_request(v), v.state) for v in doc.vms),
        containers=tuple(ContainerDef(container_request(c), c.state) for c in doc.containers),
        pools=tuple(pool_spec(p) for p in doc.pools),
    )


@router.post("/apply", response_model=ApplyResult)
def apply_document(
    body: ApplyRequest, cloud: CloudDep, ctx: Ctx, response: Response, wait: float | None = WaitParam
) -> ApplyResult:
    """Make the workspace match the document: what is missing is made, VMs are resized, started or
    stopped, changed containers are replaced; nothing the document leaves out is deleted. A change
    that cannot be made in place (a VM's image, a network's range) refuses the whole document (409
    apply_conflict) before anything is done. With `dry_run`, only the plan comes back."""
    doc = parse_document(body.document)
    if body.dry_run:
        changes = cloud.apply.plan(ctx, doc)
        return ApplyResult(changes=[ChangePublic(**_public(c)) for c in changes])
    changes, op_id = cloud.apply.apply(ctx, doc)
    operation = accepted(cloud, ctx, op_id, wait, response) if op_id else None
    return ApplyResult(changes=[ChangePublic(**_public(c)) for c in changes], operation=operation)


def _public(change: Any) -> dict[str, Any]:
    return {"kind": change.kind, "name": change.name, "action": change.action, "detail": change.detail}
