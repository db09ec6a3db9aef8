"""NoCloud seed ISO ("cidata") for cloud-init, and for cloudlet's tiny image.

The ISO holds two files, ``meta-data`` and ``user-data``, under a volume labelled ``cidata``, with
Joliet and Rock Ridge names so every reader (Linux isofs, blkid, cloud-init) sees the real names.
Every value that comes from a user is written as a JSON string, which is also a valid YAML
double-quoted scalar, so no user text is ever pasted into YAML unquoted.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

VOLUME_LABEL = "cidata"

# RFC 1123 label: letters, digits and hyphens, 1-63 characters, no hyphen at either end.
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_VALUE = 16 * 1024


def _check_text(value: str, what: str) -> str:
    """Refuse empty, overlong, multi-line or control-character text (it would break YAML or the guest)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > _MAX_VALUE:
        raise ValueError(f"{what} is too long ({len(value)} characters)")
    for ch in value:
        # Categories C* are control, format, surrogate, private and unassigned; Zl/Zp are line breaks.
        if unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp"):
            raise ValueError(f"{what} contains a control character or line break ({ch!r})")
    return value


def validate_hostname(hostname: str) -> str:
    """Return ``hostname`` if it is one RFC 1123 label, else raise ``ValueError``."""
    if not isinstance(hostname, str) or not _HOSTNAME.fullmatch(hostname):
        raise ValueError(f"invalid hostname {hostname!r}: use 1-63 letters, digits or '-', not at either end")
    return hostname


def validate_ssh_key(key: str) -> str:
    """Return the key, stripped of surrounding blanks and line ends, if it is one plausible
    authorized_keys line; raise ``ValueError`` otherwise."""
    key = _check_text(key.strip() if isinstance(key, str) else key, "ssh key")
    if len(key.split()) < 2:
        raise ValueError("ssh key must look like '<type> <base64> [comment]'")
    return key


def _yaml_str(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar. ensure_ascii=False keeps UTF-8 text readable
    # for the tiny guest's shell parser, which only undoes the \" and \\ escapes.
    return json.dumps(value, ensure_ascii=False)


def _yaml_list(key: str, items: Sequence[str]) -> list[str]:
    return [f"{key}:", *(f"  - {_yaml_str(item)}" for item in items)] if items else [f"{key}: []"]


def render_meta_data(*, instance_id: str, hostname: str, ssh_keys: Sequence[str] = ()) -> str:
    """The ``meta-data`` document: instance id, hostname and ``public-keys``.

    cloud-init gives ``public-keys`` to the image's default user even when custom user-data says
    nothing about keys; the tiny guest adds them to root's keys.
    """
    lines = [
        f"instance-id: {_yaml_str(_check_text(instance_id, 'instance id'))}",
        f"local-hostname: {_yaml_str(validate_hostname(hostname))}",
    ]
    keys = [validate_ssh_key(k) for k in ssh_keys]
    if keys:
        lines += _yaml_list("public-keys", keys)
    return "\n".join(lines) + "\n"


def render_user_data(*, hostname: str, ssh_keys: Sequence[str] = ()) -> str:
    """The default ``user-data``: a ``#cloud-config`` setting the hostname and root's SSH keys."""
    lines = ["#cloud-config", f"hostname: {_yaml_str(validate_hostname(hostname))}"]
    lines += _yaml_list("ssh_authorized_keys", [validate_ssh_key(k) for k in ssh_keys])
    return "\n".join(lines) + "\n"


def _iso_bytes(files: dict[str, bytes]) -> bytes:
    import pycdlib  # only when a seed is made: it is 16 modules an idle server need not hold

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, data in files.items():
            # ISO 9660 level names are upper case 8.3; Joliet and Rock Ridge carry the real name.
            iso_name = "/" + re.sub(r"[^A-Z0-9_]", "_", name.upper())[:8] + ".;1"
            iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path="/" + name)
        out = io.BytesIO()
        iso.write_fp(out)
        return out.getvalue()
    finally:
        iso.close()


def build_nocloud_seed(
    dest: Path,
    *,
    instance_id: str,
    hostname: str,
    ssh_keys: Sequence[str] = (),
    user_data: str | None = None,
    network_config: str | None = None,
) -> None:
    """Write a NoCloud seed ISO to ``dest``.

    ``user_data`` replaces the default ``#cloud-config`` (hostname and ``ssh_authorized_keys``) when
    given; it is written as is, and the keys still reach the guest through meta-data
    ``public-keys``. ``network_config`` (cloud-init's version 1 or 2 YAML) becomes the seed's
    ``network-config`` file; without it the guest uses DHCP. Bad input raises ``ValueError`` before
    anything is written. The file appears complete or not at all (written beside ``dest``, then
    renamed); it is mode 0600 because user-data may hold secrets.
    """
    meta = render_meta_data(instance_id=instance_id, hostname=hostname, ssh_keys=ssh_keys)
    if user_data is None:
        user = render_user_data(hostname=hostname, ssh_keys=ssh_keys)
    elif isinstance(user_data, str):
        user = user_data
    else:
        raise ValueError("user_data must be a string")
    files = {"meta-data": meta.encode(), "user-data": user.encode()}
    if network_config is not None:
        files["network-config"] = network_config.encode()
    data = _iso_bytes(files)

    dest = Path(dest)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
