"""Data directories that ship with Anima (agents-template/, units/)."""

from __future__ import annotations

from pathlib import Path


def data_dir(name: str) -> Path:
    """`name` inside the installed package (the wheel maps the repo's top-level directories
    there), or at the top of a source checkout (an editable install)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"{name}/ is missing from this installation")
