"""Running agents: `run_once` handles what is pending now (the always-on watch loop builds on it)."""

from __future__ import annotations

from collections.abc import Sequence

from anima import router
from anima.home import Home
from anima.turn import OnEvent, TurnResult, process_agent


def run_once(
    home: Home, names: Sequence[str] | None = None, *, on_event: OnEvent | None = None
) -> list[TurnResult]:
    """One pass over the agents: a turn per pending conversation batch, then routing."""
    home.require()
    results: list[TurnResult] = []
    for name in names or home.agent_names():
        run = process_agent(home, name, on_event=on_event)
        router.route_pending(home, name)
        results += run.results
    return results
