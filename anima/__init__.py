"""Anima: a git-backed, filesystem agent runtime. Every agent is a directory; every turn is a commit."""

from __future__ import annotations

__version__ = "0.1.0"
