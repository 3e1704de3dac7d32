"""Which failures count an attempt against messages, and how they are told to a person."""

from __future__ import annotations

import errno

import pytest

from anima.gitstore import GitBusy, GitFailed
from anima.turn import _environmental, describe


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        GitFailed("git unpack-objects in arya: fatal: Out of diskspace"),
        GitFailed("git update-index in arya: error: unable to write file: No space left on device"),
        GitBusy("a rebase is in progress"),
    ],
)
def test_the_machine_failing_counts_no_attempt(exc: BaseException) -> None:
    assert _environmental(exc)


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        GitFailed("git hash-object in arya: fatal: Out of diskspace"),
    ],
)
def test_a_full_disk_is_said_plainly(exc: BaseException) -> None:
    assert describe(exc).startswith("the disk is full")


def test_a_bug_still_counts_and_keeps_its_type() -> None:
    exc = KeyError("x")
    assert not _environmental(exc)
    assert describe(exc) == "KeyError: 'x'"
