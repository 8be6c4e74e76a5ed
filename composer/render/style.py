"""Colours and shapes shared by every output format, so a family looks the same everywhere."""

from __future__ import annotations

import zlib

# family -> (fill, border)
FAMILY_COLORS: dict[str, tuple[str, str]] = {
    "core": ("#dbe9f6", "#4a7bb0"),
    "vision": ("#d9f0d3", "#4f8f46"),
    "detection": ("#fde2c4", "#c47a1f"),
    "text": ("#e8dcf3", "#7b52ab"),
    "sequence": ("#fff3c4", "#b39200"),
    "graph": ("#f9d5e5", "#b04a7b"),
    "audio": ("#d4f1f0", "#2f8f8a"),
    "generative": ("#f3e0d6", "#a0522d"),
}
_EXTRA = [("#e0e7d4", "#6b7f3a"), ("#d6e4f0", "#3d6b94"), ("#f0d9d9", "#9c4848"), ("#e5e0f5", "#5e4fa2"),
          ("#d8eee8", "#3f8a74"), ("#f5ecd6", "#9c7a2e")]

INPUT = ("#eceff1", "#37474f")
OUTPUT = ("#eceff1", "#37474f")
PORT = ("#ffffff", "#78909c")
SUBPIPELINE = ("#f5f5f5", "#546e7a")
UNKNOWN = ("#f5f5f5", "#9e9e9e")
RED = "#d32f2f"
RED_FILL = "#fdecea"
RED_TEXT = "#b71c1c"
WARN = "#f9a825"
GREY_TEXT = "#616161"
EDGE = "#455a64"
CLUSTER = "#90a4ae"
FONT = "Helvetica,Arial,sans-serif"


def family_colors(family: str) -> tuple[str, str]:
    """(fill, border) of a block family; families without a fixed colour get a stable one."""
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    if family == "unknown":
        return UNKNOWN
    return _EXTRA[zlib.crc32(family.encode()) % len(_EXTRA)]


def node_colors(role: str, family: str) -> tuple[str, str]:
    if role == "input":
        return INPUT
    if role == "output":
        return OUTPUT
    if role == "port":
        return PORT
    if role == "subpipeline":
        return SUBPIPELINE
    return family_colors(family)
