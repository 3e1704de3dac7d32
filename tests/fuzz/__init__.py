"""Fuzz tests (hypothesis). Bounded for CI; `ANIMA_FUZZ_SCALE=N` runs N times the examples."""

from __future__ import annotations

import os

SCALE = max(1, int(os.environ.get("ANIMA_FUZZ_SCALE", "1")))


def examples(n: int) -> int:
    """`n` examples in CI, `n * ANIMA_FUZZ_SCALE` in a longer campaign."""
    return n * SCALE
