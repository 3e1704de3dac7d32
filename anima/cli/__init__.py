"""The `anima` command: thin click commands over the library.

`main` is the click group, imported on first use: `python -m anima` and the console script start
in anima.cli.short, which needs no click for a plain tick or send.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at run time (mypy knows)
if TYPE_CHECKING:
    from typing import Any

    from anima.cli.app import main

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from anima.cli.app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
