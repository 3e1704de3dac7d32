"""schedule / unschedule: reminders the runtime delivers back to the agent as messages. An agent
wakes itself with them, so they are capped: how many may be set at once, and how often a
repeating one may fire (`[tools.schedule]` in agent.toml)."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.message import utcnow
from anima.schedule import parse_when, pending_reminders, shortest_gap
from anima.tools.base import ToolContext, tool

_ID = re.compile(r"[\w-]{1,100}")


@tool()
def schedule(ctx: ToolContext, text: str, at: str = "", cron: str = "") -> str:
    """Set a reminder: at a time (once) or on a cron schedule (repeating). When it fires you
    receive `text` as a message of kind reminder.

    Args:
        text: what to remind yourself of
        at: ISO date-time, e.g. 2026-12-01T09:00 (local time unless it has a zone)
        cron: five-field cron schedule in local time, e.g. "0 9 * * 1" (Mondays 09:00)
    """
    if bool(at) == bool(cron):
        raise ToolError("give exactly one of `at` (once) or `cron` (repeating)")
    if not text.strip():
        raise ToolError("text is empty: say what the reminder is for")
    policy = ctx.config.tools.schedule
    count = pending_reminders(ctx.agent_dir)
    if count >= policy.max_reminders:
        raise ToolError(
            f"you have {count} reminders set; the limit is {policy.max_reminders}. "
            "Cancel ones you no longer need with unschedule first."
        )
    now = utcnow()
    fields: dict[str, str] = {
        "text": text,
        "conversation": ctx.conversation,
        "created": now.isoformat(),
    }
    if at:
        try:
            when = parse_when(at)
        except (ValueError, OverflowError) as exc:
            raise ToolError(f"{at!r} is not a date-time like 2026-12-01T09:00") from exc
        if when <= now - dt.timedelta(seconds=5):
            raise ToolError(f"{at!r} is in the past")
        # A time that passed while the model was answering means "now": a one-shot reminder
        # only fires for a time after its creation.
        fields["at"] = max(when, now).isoformat()
    else:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ToolError(f"{cron!r} is not a valid cron schedule (five fields: m h dom mon dow)")
        _check_repeat(cron, now, policy.min_repeat_minutes)
        fields["cron"] = cron
    rid = f"{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    body = "".join(f"{k} = {_toml_string(v)}\n" for k, v in fields.items())
    ctx.touched.add(f"reminders/{rid}.toml")  # named before the write
    write_atomic(ctx.agent_dir / "reminders" / f"{rid}.toml", body)
    return f"reminder {rid} set" + (f" for {fields['at']}" if at else f" on {cron!r}")


def _toml_string(value: str) -> str:
    """A JSON string is a TOML basic string, except that TOML wants DEL escaped too."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _check_repeat(cron: str, now: dt.datetime, min_minutes: float) -> None:
    gap = shortest_gap(cron, now)
    if gap is None:
        raise ToolError(f"{cron!r} never fires (no such date)")
    if gap < dt.timedelta(minutes=min_minutes):
        raise ToolError(
            f"{cron!r} would fire every {gap.total_seconds() / 60:g} minutes at times; repeating "
            f"reminders may fire at most every {min_minutes:g} minutes"
        )


@tool()
def unschedule(ctx: ToolContext, reminder_id: str) -> str:
    """Cancel a reminder by its id.

    Args:
        reminder_id: the id `schedule` returned
    """
    if not _ID.fullmatch(reminder_id):
        raise ToolError(f"no reminder {reminder_id!r}")
    path = ctx.agent_dir / "reminders" / f"{reminder_id}.toml"
    if not path.is_file():
        raise ToolError(f"no reminder {reminder_id!r}")
    ctx.touched.add(f"reminders/{reminder_id}.toml")
    path.unlink()
    return f"reminder {reminder_id} cancelled"
