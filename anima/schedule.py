"""Heartbeats and reminders: when an agent is woken without being written to.

Reminder definitions live in the agent's repo (`reminders/<id>.toml`, written by the `schedule`
tool inside a turn, so they are committed and reviewable); when each last fired is runtime state
in run/reminders/<agent>.json. A fired reminder is an ordinary inbox message of kind `reminder`
with a deterministic id, so firing twice delivers once.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from anima import mailbox
from anima.config import Heartbeat
from anima.errors import BadConfig
from anima.fsutil import write_atomic
from anima.home import Home
from anima.message import Message, iso, utcnow

LATE_AFTER = dt.timedelta(seconds=60)
_EVERY = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")


# -- heartbeats -------------------------------------------------------------------------------
def every_seconds(hb: Heartbeat) -> int | None:
    if not hb.every:
        return None
    m = _EVERY.match(hb.every)
    if not m or int(m.group(1)) == 0:
        raise BadConfig(f"heartbeat.every = {hb.every!r}: use a number and m, h or d, e.g. '30m'")
    return int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]


def in_active_hours(hb: Heartbeat, now: dt.datetime) -> bool:
    """`active_hours = "08:00-22:00"` in local time; a range may wrap past midnight."""
    if not hb.active_hours:
        return True
    try:
        start_s, end_s = hb.active_hours.split("-")
        start = dt.time.fromisoformat(start_s.strip())
        end = dt.time.fromisoformat(end_s.strip())
    except ValueError as exc:
        raise BadConfig(f"heartbeat.active_hours = {hb.active_hours!r}: use 'HH:MM-HH:MM'") from exc
    t = now.astimezone().time()
    return start <= t < end if start <= end else (t >= start or t < end)


def on_calendar(hb: Heartbeat) -> str | None:
    """The systemd OnCalendar expression for the heartbeat timer."""
    if hb.on_calendar:
        return hb.on_calendar
    secs = every_seconds(hb)
    if secs is None:
        return None
    minutes = secs // 60
    if minutes < 60:
        return f"*-*-* *:00/{minutes}:00"
    if minutes % 1440 == 0:
        return "*-*-* 00:00:00" if minutes == 1440 else f"*-*-1/{minutes // 1440} 00:00:00"
    return f"*-*-* 00/{minutes // 60}:00:00"


def cron_schedule(hb: Heartbeat) -> str | None:
    """The crontab schedule for the heartbeat (`anima cron`)."""
    if hb.cron:
        return hb.cron
    secs = every_seconds(hb)
    if secs is None:
        return None
    minutes = secs // 60
    if minutes < 60:
        return f"*/{minutes} * * * *"
    if minutes % 1440 == 0:
        return "0 0 * * *" if minutes == 1440 else f"0 0 */{minutes // 1440} * *"
    return f"0 */{minutes // 60} * * *"


def _runtime_schedule(hb: Heartbeat) -> str | None:
    """The cron schedule the runtime drives a heartbeat by (the one `anima cron` prints; the
    timer's OnCalendar agrees), or None: no heartbeat, or only a systemd `on_calendar`, which
    its timer alone drives."""
    if hb.on_calendar and not hb.cron:
        return None
    return cron_schedule(hb)


def heartbeat_slot(hb: Heartbeat, now: dt.datetime) -> dt.datetime | None:
    """The start of the heartbeat period `now` falls in: the schedule's latest firing at or
    before `now`, in UTC (None as for _runtime_schedule)."""
    when = _runtime_schedule(hb)
    if when is None:
        return None
    from croniter import croniter

    start = now.astimezone() + dt.timedelta(microseconds=1)  # a firing at exactly `now` counts
    prev: dt.datetime = croniter(when, start).get_prev(dt.datetime)
    return prev.astimezone(dt.UTC)


def next_heartbeat(hb: Heartbeat, now: dt.datetime) -> dt.datetime | None:
    """When the schedule fires next (None as for _runtime_schedule)."""
    when = _runtime_schedule(hb)
    if when is None:
        return None
    from croniter import croniter

    nxt: dt.datetime = croniter(when, now.astimezone()).get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)


def tick(
    home: Home, name: str, now: dt.datetime | None = None, *, force: bool = False
) -> Message | None:
    """Deliver a heartbeat to `name` (None outside its active hours unless forced). Its id
    names the schedule's slot, so the runtime and a timer (or cron) firing for the same slot
    deliver one heartbeat between them; a forced tick is its own."""
    from anima.config import load_agent_config

    agent_dir = home.agent_dir(name)
    now = now or utcnow()
    hb = load_agent_config(agent_dir / "agent.toml").heartbeat
    if not force and not in_active_hours(hb, now):
        return None
    slot = None if force else heartbeat_slot(hb, now)
    msg = Message(
        id=f"hb-{(slot or now).strftime('%Y%m%dT%H%M%S')}",
        sender="timer",
        to=name,
        channel="timer",
        conversation="heartbeat",
        kind="heartbeat",
        created=iso(now),
        body="Heartbeat: a periodic wake-up. Look after anything pending (reminders, follow-ups, "
        "notes to tidy). If there is nothing to do, reply exactly HEARTBEAT_OK.\n",
    )
    mailbox.deliver(agent_dir, msg)
    _mark_heartbeat(home, name, slot or now)
    return msg


def _mark_heartbeat(home: Home, name: str, when: dt.datetime) -> None:
    mark_fired(home, "heartbeats", name, when)


def fire_heartbeat(home: Home, name: str, now: dt.datetime | None = None) -> Message | None:
    """The runtime's heartbeat driver, called every second: deliver the current slot's heartbeat
    once. A runtime that has never seen the agent starts at the next slot (as a new timer does);
    one that was down fires the latest missed slot once, not every one it missed."""
    from anima.config import load_agent_config

    now = now or utcnow()
    hb = load_agent_config(home.agent_dir(name) / "agent.toml").heartbeat
    slot = heartbeat_slot(hb, now)
    if slot is None or not unfired(home, "heartbeats", name, slot, now):
        return None
    if not in_active_hours(hb, now):
        _mark_heartbeat(home, name, slot)  # seen: nothing to deliver for this slot
        return None
    return tick(home, name, now)


def last_heartbeat(home: Home, name: str) -> dt.datetime | None:
    return last_fired(home, "heartbeats", name)


# -- slots: when a daily or periodic trigger last fired ---------------------------------------
def last_fired(home: Home, folder: str, name: str) -> dt.datetime | None:
    """The latest slot fired (or seen) for `name`, from run/<folder>/<name>."""
    try:
        when = dt.datetime.fromisoformat((home.run_dir / folder / name).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def mark_fired(home: Home, folder: str, name: str, when: dt.datetime) -> None:
    write_atomic(home.run_dir / folder / name, iso(when) + "\n", durable=False)


def unfired(
    home: Home,
    folder: str,
    name: str,
    slot: dt.datetime,
    now: dt.datetime,
    fresh: dt.timedelta = dt.timedelta(0),
) -> bool:
    """Is `slot` newer than the last one fired (run/<folder>/<name>)? On a first look at an
    agent the slot is marked seen and is not fired (a new schedule starts with its next slot),
    unless it began less than `fresh` ago."""
    last = last_fired(home, folder, name)
    if last is not None and slot <= last:
        return False
    if last is None and now - slot >= fresh:
        mark_fired(home, folder, name, slot)
        return False
    return True


# -- reminders --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reminder:
    id: str
    text: str
    at: dt.datetime | None
    cron: str
    created: dt.datetime
    conversation: str

    def next_after(self, after: dt.datetime) -> dt.datetime | None:
        """The next firing after `after`; None when there is none (a cron schedule for a day
        that never comes, such as 30 February, never fires rather than failing)."""
        if self.at is not None:
            return self.at if self.at > after else None
        from croniter import croniter

        try:
            nxt: dt.datetime = croniter(self.cron, after.astimezone()).get_next(dt.datetime)
        except (ValueError, KeyError):  # CroniterBadDateError and friends are ValueErrors
            return None
        return nxt.astimezone(dt.UTC)


REPEAT_SAMPLES = 200
"""Firings of a cron schedule looked at for its shortest gap: enough to cover a day of any
schedule that fires at most every 15 minutes, and several days of any sparser one."""


def shortest_gap(cron: str, start: dt.datetime) -> dt.timedelta | None:
    """The shortest time between two firings of `cron` among its next REPEAT_SAMPLES after
    `start`; None when it fires less than twice."""
    rem = Reminder("", "", None, cron, start, "")
    times: list[dt.datetime] = []
    after = start
    while len(times) < REPEAT_SAMPLES:
        nxt = rem.next_after(after)
        if nxt is None:
            break
        times.append(nxt)
        after = nxt
    return min((b - a for a, b in zip(times, times[1:], strict=False)), default=None)


def pending_reminders(agent_dir: Path) -> int:
    """Reminders the agent has set (repeating ones, and one-shots not yet handled)."""
    folder = agent_dir / "reminders"
    return sum(1 for _ in folder.glob("*.toml")) if folder.is_dir() else 0


def parse_when(at: str) -> dt.datetime:
    """ISO date-time; without a zone it is local time."""
    try:
        when = dt.datetime.fromisoformat(at.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{at!r} is not an ISO date-time like 2026-12-01T09:00") from exc
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return when.astimezone(dt.UTC)


def load_reminders(agent_dir: Path) -> list[Reminder]:
    folder = agent_dir / "reminders"
    if not folder.is_dir():  # most agents: one stat
        return []
    out = []
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
            out.append(
                Reminder(
                    id=path.stem,
                    text=str(data["text"]),
                    at=parse_when(data["at"]) if data.get("at") else None,
                    cron=str(data.get("cron", "")),
                    created=parse_when(str(data.get("created", "1970-01-01T00:00:00Z"))),
                    conversation=str(data.get("conversation", "reminders")),
                )
            )
        except (KeyError, ValueError, tomllib.TOMLDecodeError):
            continue  # a hand-broken file is skipped, not fatal; `anima status` would show it
    return out


def _state_path(home: Home, name: str) -> Path:
    return home.run_dir / "reminders" / f"{name}.json"


def _load_state(home: Home, name: str) -> dict[str, str]:
    try:
        data = json.loads(_state_path(home, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def fire_due(home: Home, name: str, now: dt.datetime | None = None) -> list[Message]:
    """Deliver every reminder of `name` that is due. Occurrences missed while nothing ran are
    delivered once, marked late."""
    now = now or utcnow()
    agent_dir = home.agents_dir / name
    state = _load_state(home, name)
    fired = []
    for rem in load_reminders(agent_dir):
        last = dt.datetime.fromisoformat(state[rem.id]) if rem.id in state else None
        if rem.at is not None and last is not None:
            continue  # one-shot, already fired
        due = rem.next_after(last or rem.created - dt.timedelta(microseconds=1))
        if due is None or due > now:
            continue
        late = now - due > LATE_AFTER
        msg = Message(
            id=f"rem-{rem.id}-{due.strftime('%Y%m%dT%H%M%S')}",
            sender="timer",
            to=name,
            channel="timer",
            conversation=rem.conversation,
            kind="reminder",
            created=iso(now),
            body=rem.text.rstrip() + "\n",
            extra={
                "reminder_id": rem.id,
                "scheduled_for": iso(due),
                "late": late,
                "once": rem.at is not None,
            },
        )
        mailbox.deliver(agent_dir, msg)
        state[rem.id] = now.isoformat()
        fired.append(msg)
    if fired:
        write_atomic(_state_path(home, name), json.dumps(state, indent=1))
    return fired


def next_due(home: Home, name: str, now: dt.datetime) -> dt.datetime | None:
    reminders = load_reminders(home.agents_dir / name)
    if not reminders:
        return None
    state = _load_state(home, name)
    dues = []
    for rem in reminders:
        last = dt.datetime.fromisoformat(state[rem.id]) if rem.id in state else None
        if rem.at is not None and last is not None:
            continue
        d = rem.next_after(last or rem.created - dt.timedelta(microseconds=1))
        if d is not None:
            dues.append(d)
    return min(dues, default=None)


def next_wake(home: Home, name: str, now: dt.datetime) -> dt.datetime | None:
    """When the runtime must next call fire_due, fire_heartbeat and reflection.fire for `name`,
    having just called them at `now`: its next reminder, heartbeat or reflection slot (None:
    nothing scheduled)."""
    from anima import reflection
    from anima.config import load_agent_config

    cfg = load_agent_config(home.agents_dir / name / "agent.toml")
    times = [
        next_due(home, name, now),
        next_heartbeat(cfg.heartbeat, now),
        reflection.next_slot(cfg.reflection, now),
    ]
    return min((t for t in times if t is not None), default=None)


def retire(agent_dir: Path, batch: list[Message]) -> list[str]:
    """One-shot reminders are removed from the repo by the turn that handles them."""
    touched = []
    for m in batch:
        if m.kind == "reminder" and m.extra.get("once") and m.extra.get("reminder_id"):
            path = agent_dir / "reminders" / f"{m.extra['reminder_id']}.toml"
            if path.exists():
                path.unlink()
                touched.append(f"reminders/{path.name}")
    return touched
