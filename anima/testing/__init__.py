"""Test support shipped with Anima: the fake model server used by tests and benches."""

from anima.testing.fake_model import FakeModelServer, Fault, Reply

__all__ = ["Fault", "FakeModelServer", "Reply"]
