"""Typed settings, read from the environment (``CLOUDLET_*``) and an optional TOML config file.

Settings are built by the app factory or the CLI, never at import time, so tests can run several
servers with different settings in one process.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloudlet.services.outbound import parse_allow_entry

DEFAULT_CONFIG_FILE = Path("/etc/cloudlet/cloudlet.toml")


class Accelerator(enum.StrEnum):
    """How guests are accelerated: ``auto`` picks KVM only when it really works, else TCG."""

    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


def _default_data_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/cloudlet")
    return Path.home() / ".local/share/cloudlet"


class Settings(BaseSettings):
    """Everything the server needs to know; each field can be set as ``CLOUDLET_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CLOUDLET_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Where images, disks and the DB live."
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite (WAL) in the data dir."
    )
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8470, ge=1, le=65535)
    libvirt_uri: str = "qemu:///system"
    docker_url: str = "unix:///var/run/docker.sock"
    accelerator: Accelerator = Accelerator.AUTO
    vm_driver: str = Field(default="libvirt", description="Compute driver for VMs: 'libvirt' or 'sim'.")
    container_driver: str = Field(
        default="docker", description="Driver for containers: 'docker', 'sim' or 'none' (no containers)."
    )
    allow_host_mounts: bool = Field(
        default=False, description="Let API users bind-mount host folders into containers (admins only)."
    )
    allow_privileged: bool = Field(default=False, description="Let API users run privileged containers.")
    image_import_dirs: list[Path] = Field(
        default_factory=list,
        description="Server-side folders images may be imported from by path (plus <data_dir>/import). "
        "Anything else must be uploaded: a path import must not let API users read arbitrary host files.",
    )
    outbound_allow: list[str] = Field(
        default_factory=list,
        description="Internal hosts (names) and networks (CIDR, or single addresses) image downloads "
        'may reach, e.g. ["mirror.lan", "10.9.0.0/16"]. Everything else that is not a public address '
        "(loopback, private, link-local, multicast, reserved...) is refused, redirects included.",
    )
    image_url_block_link_local: bool = Field(
        default=True,
        description="Deprecated (use outbound_allow): false allows link-local sources (169.254.0.0/16, "
        "fe80::/10), as it did before every internal address was refused.",
    )
    image_download_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an image download may wait for the server to answer or send."
    )
    image_download_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a whole image download may take, however steadily the source sends.",
    )
    memory_reserve_mb: int = Field(default=512, ge=0, description="Host memory never given to guests.")
    default_network_cidr: str = "10.47.0.0/24"
    stop_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a graceful stop waits before forcing."
    )
    resync_interval: float = Field(default=15.0, gt=0, description="Seconds between full reconciler passes.")
    operation_workers: int = Field(default=8, ge=1)
    pool_interval: float = Field(
        default=3.0, gt=0, description="Seconds between reservation-pool controller passes."
    )
    pool_min_lease: int = Field(
        default=60, ge=1, description="Shortest lease a pool gives, in seconds (tests use a few)."
    )
    heartbeat_interval: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between a replica's heartbeats; 3 missed ones mean it is gone.",
    )
    jwt_secret: str | None = Field(
        default=None,
        description="Key signing sign-in tokens (32+ characters); unset: the key in jwt_key_file.",
    )
    jwt_key_file: Path | None = Field(
        default=None,
        description="File holding the key that signs sign-in tokens when jwt_secret is unset (default "
        "<data_dir>/jwt.key, made 0600 at first start). Replicas sharing one database must sign with "
        "one key: give them one file (or one jwt_secret).",
    )
    host_terminal: bool = Field(
        default=False, description="Offer system admins a shell on the host over a websocket (audited)."
    )
    allow_signup: bool = Field(default=False, description="Let anyone create an account (POST /auth/signup).")
    oidc_issuer: str | None = Field(
        default=None, description="OpenID Connect provider (issuer URL); sign-in through it is off if unset."
    )
    oidc_client_id: str | None = Field(default=None, description="This server's client id at the provider.")
    oidc_client_secret: str | None = Field(default=None, description="This server's client secret.")
    oidc_scopes: str = Field(default="openid profile email", description="Scopes asked of the provider.")
    oidc_username_claim: str = Field(
        default="preferred_username", description="ID token claim a new account's username is made from."
    )
    oidc_auto_create: bool = Field(
        default=True, description="Make a local account at a person's first OpenID Connect sign-in."
    )
    public_url: str | None = Field(
        default=None,
        description="External base URL of the server (e.g. https://cloud.example.com), for the OpenID "
        "Connect redirect URI; default: taken from each request.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API (JSON list); none by default.",
    )
    login_attempts: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins of one account from one address before each further attempt "
        "waits (1 s, doubling); an address gets 5 times as many across all accounts.",
    )
    login_window: float = Field(
        default=300.0, gt=0, description="The longest wait between failed sign-ins, in seconds."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='Addresses or networks (JSON list, e.g. ["10.0.0.5", "10.1.0.0/24"]) of reverse '
        "proxies whose X-Forwarded-For and X-Forwarded-Proto headers are believed, on every listener. "
        "None by default, loopback included: the client's address is the connection's.",
    )
    log_level: str = "info"
    # The OS Cloud API of the system cloudlet replaces: off unless a listen address is given.
    oscloud_listen: str | None = Field(
        default=None,
        description="host:port for the OS Cloud API, e.g. 127.0.0.1:5000; a bare port means loopback. "
        "An address other than loopback needs oscloud_token.",
    )
    oscloud_workspace: str = "default"
    oscloud_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the OS Cloud API answers besides localhost, 127.0.0.1, [::1] and "
        "its listen address (JSON list); any other is refused, so a web page cannot reach it through "
        "DNS rebinding.",
    )
    oscloud_token: str | None = Field(
        default=None,
        min_length=16,
        description="When set, OS Cloud API requests need 'Authorization: Bearer <token>'.",
    )
    # The replaced "Virtual Machine Reservation System" API: off unless a listen address is given.
    reservation_listen: str | None = Field(
        default=None,
        description="host:port for the reservation system's API, e.g. 127.0.0.1:5000; a bare port means "
        "loopback. It needs reservation_pool; an address other than loopback needs reservation_token.",
    )
    reservation_pool: str | None = Field(
        default=None, description="The pool (in reservation_workspace) whose VMs the reservation API serves."
    )
    reservation_workspace: str = Field(default="default", description="The workspace of reservation_pool.")
    reservation_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names the reservation API answers besides localhost, 127.0.0.1, [::1] and "
        "its listen address (JSON list); any other is refused (DNS rebinding).",
    )
    reservation_token: str | None = Field(
        default=None,
        min_length=16,
        description="When set, reservation API requests need 'Authorization: Bearer <token>' (and it may "
        "listen off loopback).",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        """Each entry must be an address or a network: a name or '*' would trust anyone."""
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"trusted_proxies: {entry!r} is not an IP address or network") from None
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _check_outbound_allow(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            parse_allow_entry(entry)  # a typo must stop the server, not silently allow nothing
        return entries

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'cloudlet.db'}"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def allowed_import_dirs(self) -> list[Path]:
        return [self.data_dir / "import", *self.image_import_dirs]

    @property
    def projects_dir(self) -> Path:
        return self.data_dir / "projects"

    @property
    def operation_logs_dir(self) -> Path:
        return self.data_dir / "operation-logs"

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def effective_jwt_key_file(self) -> Path:
        return self.jwt_key_file or self.data_dir / "jwt.key"


def config_path(config_file: Path | None = None) -> Path:
    """The config file the settings are read from: the one given, else ``CLOUDLET_CONFIG``, else
    the default (it may not exist)."""
    return config_file or Path(os.environ.get("CLOUDLET_CONFIG", DEFAULT_CONFIG_FILE))


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: config file values, overridden by the environment, overridden by ``overrides``."""
    path = config_path(config_file)
    file_values: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as fh:
            file_values = tomllib.load(fh)
    env_values = Settings().model_dump(exclude_unset=True)
    return Settings(**{**file_values, **env_values, **overrides})
