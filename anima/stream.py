"""Live turn output as files: run/stream/<agent>/<message-id>.jsonl, one JSON event a line.

The runtime appends while the model streams; `anima chat` (or anything else) tails the file.
Events: {"t": "text", "v"}, {"t": "tool", "name", "args"}, {"t": "tool_result", "name", "ok"},
{"t": "retry", "reason", "attempt", "delay"}, {"t": "end", "commit", "reply", "error"}.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from anima.home import Home
from anima.llm import Retrying, TextDelta, ToolCall
from anima.message import Message

KEEP_SECONDS = 3600


def stream_path(home: Home, agent: str, msg_id: str) -> Path:
    return home.run_dir / "stream" / agent / f"{msg_id}.jsonl"


def _short(args: dict[str, Any], limit: int = 60) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in args.items())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def encode(event: object) -> dict[str, Any] | None:
    from anima.turn import ToolResult, TurnEnded

    if isinstance(event, TextDelta):
        return {"t": "text", "v": event.text}
    if isinstance(event, ToolCall):
        return {"t": "tool", "name": event.name, "args": _short(event.input)}
    if isinstance(event, ToolResult):
        return {
            "t": "tool_result",
            "name": event.name,
            "ok": not event.is_error,
            "detail": event.content.splitlines()[0][:120] if event.content else "",
        }
    if isinstance(event, Retrying):
        return {
            "t": "retry",
            "reason": event.reason[:200],
            "attempt": event.attempt,
            "delay": round(event.delay, 1),
        }
    if isinstance(event, TurnEnded):
        return {"t": "end", "commit": event.commit, "reply": event.reply, "error": event.error}
    return None


class StreamWriter:
    """An `on_event` callback for the turn engine that appends events to stream files."""

    def __init__(self, home: Home):
        self.home = home
        self._lock = threading.Lock()

    def __call__(self, trigger: Message, event: object) -> None:
        data = encode(event)
        if data is None:
            return
        path = stream_path(self.home, trigger.to, trigger.id)
        line = json.dumps(data, ensure_ascii=False) + "\n"
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(line)


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete events appended since `offset`, and the new offset."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
    events = [json.loads(x) for x in data[:end].splitlines() if x.strip()]
    return events, offset + end


def clean(home: Home, older_than: float = KEEP_SECONDS) -> None:
    cutoff = time.time() - older_than
    for f in (home.run_dir / "stream").glob("*/*.jsonl"):
        if f.stat().st_mtime < cutoff:
            f.unlink(missing_ok=True)
