"""Sizes in the OS Cloud API: '2G', '512M', '10GiB' or plain bytes."""

from __future__ import annotations

import pytest

from cloudlet.compat.oscloud import parse_size
from cloudlet.errors import Invalid

KIB, MIB, GIB, TIB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2G", 2 * GIB),
        ("512M", 512 * MIB),
        ("10GiB", 10 * GIB),
        ("1024", 1024),
        ("0", 0),
        ("64K", 64 * KIB),
        ("1T", TIB),
        ("2g", 2 * GIB),
        ("512m", 512 * MIB),
        ("2GB", 2 * GIB),
        ("4 GiB", 4 * GIB),
        (" 8G ", 8 * GIB),
        ("100B", 100),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, "mem_size") == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "G", "abc", "1.5G", "-1G", "2X", "2 G B", "2GG", "0x10", "1e9", "2Gi", "10 GiBs", "²G"],
)
def test_bad_sizes_are_invalid(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_size(text, "mem_size")
    assert info.value.status == 422
    assert "mem_size" in info.value.detail
    assert repr(text) in info.value.detail
