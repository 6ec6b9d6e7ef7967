"""Folders (builds, runs) compared byte for byte."""

from __future__ import annotations

from pathlib import Path


def folder_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (its path relative to ``root``) and its bytes: what a refused
    command must leave unchanged."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def tree_bytes(root: Path) -> dict[str, bytes]:
    """A build's files less its timings (build_report.json) and plots: what two builds of one recipe share."""
    return {name: data for name, data in folder_bytes(root).items()
            if Path(name).name != "build_report.json" and Path(name).suffix != ".png"}
