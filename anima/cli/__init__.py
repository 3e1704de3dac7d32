"""The `anima` command: thin click commands over the library."""

from __future__ import annotations

from anima.cli.app import main

__all__ = ["main"]
