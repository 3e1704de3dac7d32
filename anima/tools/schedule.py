"""schedule / unschedule: reminders the runtime delivers back to the agent as messages."""

from __future__ import annotations

import datetime as dt
import json
import secrets

from anima.errors import ToolError
from anima.fsutil import write_atomic
from anima.message import utcnow
from anima.schedule import parse_when
from anima.tools.base import ToolContext, tool


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
    now = utcnow()
    fields: dict[str, str] = {
        "text": text,
        "conversation": ctx.conversation,
        "created": now.isoformat(),
    }
    if at:
        try:
            when = parse_when(at)
        except ValueError as exc:
            raise ToolError(str(exc)) from exc
        if when <= now - dt.timedelta(seconds=5):
            raise ToolError(f"{at!r} is in the past")
        # A time that passed while the model was answering means "now": a one-shot reminder
        # only fires for a time after its creation.
        fields["at"] = max(when, now).isoformat()
    else:
        from croniter import croniter

        if not croniter.is_valid(cron):
            raise ToolError(f"{cron!r} is not a valid cron schedule (five fields: m h dom mon dow)")
        fields["cron"] = cron
    rid = f"{now.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    body = "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in fields.items())
    write_atomic(ctx.agent_dir / "reminders" / f"{rid}.toml", body)
    ctx.touched.add(f"reminders/{rid}.toml")
    return f"reminder {rid} set" + (f" for {fields['at']}" if at else f" on {cron!r}")


@tool()
def unschedule(ctx: ToolContext, reminder_id: str) -> str:
    """Cancel a reminder by its id.

    Args:
        reminder_id: the id `schedule` returned
    """
    path = ctx.agent_dir / "reminders" / f"{reminder_id}.toml"
    if "/" in reminder_id or ".." in reminder_id or not path.exists():
        raise ToolError(f"no reminder {reminder_id!r}")
    path.unlink()
    ctx.touched.add(f"reminders/{reminder_id}.toml")
    return f"reminder {reminder_id} cancelled"
