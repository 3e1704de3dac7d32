"""Test support shipped with Anima: the fake model server used by tests and benches.

Imported lazily, so `python -m anima.testing.fake_model` does not find its own module already
imported by the package (runpy's RuntimeWarning)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anima.testing.fake_model import FakeModelServer, Fault, Reply

__all__ = ["Fault", "FakeModelServer", "Reply"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from anima.testing import fake_model

        return getattr(fake_model, name)
    raise AttributeError(name)
