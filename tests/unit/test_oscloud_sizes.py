"""Sizes in the OS Cloud API, read as OS Cloud read them (humanfriendly, binary units either way):
'2G', '512M', '1.5G', '2GiB', '10 GB', plain bytes; anything else in its words."""

from __future__ import annotations

from typing import Any

import pytest

from cloudlet.compat.oscloud_wire import Refusal, parse_size

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * GIB),
        ("512M", 512 * MIB),
        ("1.5G", 3 * GIB // 2),
        ("2GiB", 2 * GIB),
        ("10 GB", 10 * GIB),  # "GB" is binary too, as in OS Cloud
        ("10GiB", 10 * GIB),
        ("1024", 1024),
        ("0", 0),
        ("64K", 64 * KIB),
        ("1T", TIB),
        ("2g", 2 * GIB),
        ("512m", 512 * MIB),
        ("4 GiB", 4 * GIB),
        (" 8G ", 8 * GIB),
        ("100B", 100),
        ("5 bytes", 5),
        ("2 gigabytes", 2 * GIB),
        ("0.5M", 512 * KIB),
        (2147483648, 2 * GIB),  # a JSON number: bytes
    ],
)
def test_sizes(text: Any, size: int) -> None:
    assert parse_size(text, "mem_size") == size


@pytest.mark.parametrize(
    "text", ["", " ", "G", "abc", "-1G", "2X", "0x10", "1e9", "²G", True, -5, 1.5, None, [2]]
)
def test_bad_sizes_are_refused_in_os_cloud_words(text: Any) -> None:
    with pytest.raises(Refusal) as info:
        parse_size(text, "mem_size")
    assert info.value.message == f"Invalid mem_size: {text}"
    assert info.value.status == 200 and info.value.code == "invalid_size"
