"""The dashboard's pages as functions of the home and the request's parameters, returning
escaped HTML. Synchronous (they read files and ask git): the server runs them in a thread."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from anima import audit, gitstore, memory, proposals, search, status
from anima.agent import Agent
from anima.channels import access
from anima.errors import AnimaError
from anima.home import Home
from anima.web import queries
from anima.web.html import Html, csrf_field, join, nav_items, page, post_button, render
from anima.web.svg import bar_chart


def _when(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def agent_nav(name: str, current: str) -> Html:
    links = (
        (f"/agents/{name}/chat", "Conversation"),
        (f"/timeline?{urlencode({'agent': name})}", "Timeline"),
        (f"/agents/{name}/memory", "Memory"),
        (f"/agents/{name}/stats", "Charts"),
        (f"/agents/{name}/proposals", "Proposals"),
    )
    return render(
        '<nav class="sub" aria-label="{}"><ul>{}</ul></nav>',
        f"Agent {name}",
        nav_items(links, lambda _href, label: label == current),
    )


# -- overview ---------------------------------------------------------------------------------


def overview_fragment(home: Home) -> Html:
    """The live part of the overview: runtime, agents, channels. Re-sent by the event stream."""
    data = status.collect(home)
    runtime = (
        render(
            '<p class="ok">Runtime live (pid {}, since {}).</p>', data["pid"], _when(data["since"])
        )
        if data["live"]
        else Html(
            '<p class="warn">No runtime is live: messages wait until <code>anima run</code> starts.</p>'
        )
    )
    rows = []
    for name, info in data["agents"].items():
        last = info["last_turn"]
        last_cell = (
            render(
                '<a href="/agents/{}/commit/{}">{}</a> <span class="muted">{}</span>',
                name,
                last["commit"],
                last["subject"],
                _when(last["at"]),
            )
            if last
            else Html('<span class="muted">no turns yet</span>')
        )
        problems = [
            f"{info['failing']} failing" if info["failing"] else "",
            f"{info['rejected']} rejected" if info["rejected"] else "",
            f"{info['set_aside']} set aside" if info["set_aside"] else "",
            "paused (budget)" if info["paused"] else "",
            f"git: {info['git_busy']}" if info["git_busy"] else "",
            f"last error: {info['last_error']}" if info.get("last_error") else "",
        ]
        rows.append(
            render(
                '<tr><th scope="row"><a href="/agents/{}/chat">{}</a></th><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
                name,
                name,
                "replying…" if queries.replying(home.run_dir, name) else "idle",
                info["pending"],
                last_cell,
                _when(info["next_heartbeat"]) or "—",
                _when(info["next_reminder"]) or "—",
                _when(info.get("next_reflection")) or "—",
                "; ".join(p for p in problems if p) or "—",
            )
        )
    table = render(
        '<table id="agents-table"><caption>Agents</caption><thead><tr><th scope="col">Agent</th><th scope="col">Now</th><th scope="col">Pending</th>'
        '<th scope="col">Last turn</th><th scope="col">Next heartbeat</th><th scope="col">Next reminder</th>'
        '<th scope="col">Next reflection</th><th scope="col">Problems</th></tr></thead><tbody>{}</tbody></table>',
        join(rows)
        or Html('<tr><td colspan="8">No agents yet: <code>anima new NAME</code>.</td></tr>'),
    )
    return join([runtime, table, channels_fragment(home)])


def channels_fragment(home: Home) -> Html:
    from anima import channels

    try:
        counts = channels.spool_counts(home)
    except (AnimaError, OSError) as exc:
        return render('<p class="warn">Channels: {}</p>', exc)
    pairing = len(access.pending(home))
    items = [
        render(
            "<li>{}: {} waiting, {} dead letters, {} sent</li>",
            name,
            c["waiting"],
            c["failed"],
            c["sent"],
        )
        for name, c in counts.items()
    ]
    return render(
        '<h2>Channels</h2><ul>{}</ul><p><a href="/approvals">{} pairing requests, {} dead letters to decide</a></p>',
        join(items) or Html("<li>none configured</li>"),
        pairing,
        sum(c["failed"] for c in counts.values()),
    )


def overview(home: Home) -> Html:
    body = render('<div id="live">{}</div>', overview_fragment(home))
    return page("Agents", body, current="/", data={"page": "overview"})


# -- conversation -----------------------------------------------------------------------------


def chat_fragment(home: Home, name: str, conversation: str) -> Html:
    agent = Agent.open(home, name)
    bubbles = []
    for b in queries.chat(agent.path, name, conversation):
        tools = join(
            render(
                "<details><summary>tool {}</summary><pre>{}</pre><pre>{}</pre></details>",
                t,
                args,
                result,
            )
            for t, args, result in b.tools
        )
        bubbles.append(
            render(
                '<li class="bubble {}{}"><p class="who">{} <span class="muted">{}{}</span></p>{}<div class="text">{}</div></li>',
                b.role,
                " pending" if b.pending else "",
                b.who,
                _when(b.ts),
                " · waiting for a reply" if b.pending else "",
                tools,
                b.text,
            )
        )
    return render(
        '<ol class="chat">{}</ol>',
        join(bubbles) or Html('<li class="muted">No messages in this conversation yet.</li>'),
    )


def _proposals_waiting(agent: Agent) -> Html:
    """A line leading to the agent's open proposals, when it has any."""
    waiting = [p.id for p in proposals.proposals(agent) if p.state == "open"]
    if not waiting:
        return Html("")
    return render(
        '<p class="notice"><a href="/agents/{}/proposals">{} open proposal{} to decide</a>: {}</p>',
        agent.name,
        len(waiting),
        "" if len(waiting) == 1 else "s",
        ", ".join(waiting),
    )


def chat_page(home: Home, name: str, conversation: str, csrf: str) -> Html:
    agent = Agent.open(home, name)
    queries.check_conversation(conversation)
    threads = sorted(set(queries.conversations(agent.path)) | {conversation})
    picker = join(
        render(
            '<li><a href="/agents/{}/chat?{}"{}>{}</a></li>',
            name,
            urlencode({"c": c}),
            Html(' aria-current="page"') if c == conversation else Html(""),
            c,
        )
        for c in threads
    )
    marker = queries.marker(agent.path)  # before the chat is read: a change after it shows
    pending_ids = ",".join(m.id for m in queries.pending(agent.path, name))
    body = render(
        '{}{}<nav aria-label="Conversations"><ul class="threads">{}</ul></nav>'
        '<section aria-labelledby="conv-h"><h2 id="conv-h">{}</h2>'
        '<div id="chat" aria-live="polite">{}</div><div id="streaming" aria-live="polite"></div>'
        '{}<form method="post" action="/agents/{}/send" class="send">{}'
        '<input type="hidden" name="c" value="{}">'
        '<label for="body">Message to {}</label><textarea id="body" name="body" rows="3" required maxlength="100000"></textarea>'
        '<button type="submit">Send</button></form></section>',
        agent_nav(name, "Conversation"),
        _proposals_waiting(agent),
        picker,
        conversation,
        chat_fragment(home, name, conversation),
        Html("")
        if status.runtime_live(home)
        else Html(
            '<p class="warn">No runtime is live: your message waits until <code>anima run</code> starts.</p>'
        ),
        name,
        csrf_field(csrf),
        conversation,
        name,
    )
    return page(
        f"{name} · {conversation}",
        body,
        data={
            "page": "chat",
            "agent": name,
            "conversation": conversation,
            "pending": pending_ids,
            "marker": marker,
        },
    )


# -- timeline ---------------------------------------------------------------------------------


def timeline_page(home: Home, params: dict[str, str]) -> Html:
    names = home.agent_names()
    name = params.get("agent") or (names[0] if names else "")
    if not name:
        return page("Timeline", Html("<p>No agents yet.</p>"), current="/timeline")
    agent = Agent.open(home, name)
    f = queries.Filters(
        conversation=params.get("conversation", ""),
        trigger=params.get("trigger", ""),
        since=params.get("since", ""),
        until=params.get("until", ""),
    )
    try:
        number = int(params.get("page", "0"))
    except ValueError:
        number = 0
    tl = queries.timeline(agent.path, f, min(max(number, 0), 10_000))
    rows = [
        render(
            '<tr><td><a href="/agents/{}/commit/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            '<td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td></tr>',
            name,
            e.sha,
            e.short,
            _when(e.date),
            e.subject,
            e.trailers.get("Anima-Trigger", ""),
            e.trailers.get("Anima-Model", ""),
            f"{e.trailers.get('Anima-Tokens-In', '')}/{e.trailers.get('Anima-Tokens-Out', '')}",
            e.trailers.get("Anima-Tool-Calls", ""),
            e.trailers.get("Anima-Duration-Ms", ""),
            e.trailers.get("Anima-Conversation", ""),
        )
        for e in tl.entries
    ]
    agent_options = join(
        render("<option{}>{}</option>", Html(" selected") if n == name else Html(""), n)
        for n in names
    )
    form = render(
        '<form method="get" action="/timeline" class="filters">'
        '<label>Agent <select name="agent">{}</select></label>'
        '<label>Conversation <input name="conversation" value="{}" list="convs"></label><datalist id="convs">{}</datalist>'
        '<label>Trigger <input name="trigger" value="{}" placeholder="heartbeat, cli, telegram…"></label>'
        '<label>From <input type="date" name="since" value="{}"></label>'
        '<label>To <input type="date" name="until" value="{}"></label>'
        '<button type="submit">Filter</button></form>',
        agent_options,
        f.conversation,
        join(render("<option>{}</option>", c) for c in queries.conversations(agent.path)),
        f.trigger,
        f.since,
        f.until,
    )
    base = {
        k: v
        for k, v in {
            "agent": name,
            "conversation": f.conversation,
            "trigger": f.trigger,
            "since": f.since,
            "until": f.until,
        }.items()
        if v
    }
    pager = []
    if tl.page > 0:
        pager.append(
            render(
                '<a rel="prev" href="/timeline?{}">Newer</a>',
                urlencode({**base, "page": tl.page - 1}),
            )
        )
    if tl.has_more:
        pager.append(
            render(
                '<a rel="next" href="/timeline?{}">Older</a>',
                urlencode({**base, "page": tl.page + 1}),
            )
        )
    body = render(
        '{}{}<table class="timeline"><caption>Turns of {}, page {}</caption><thead><tr>'
        '<th scope="col">Commit</th><th scope="col">When (UTC)</th><th scope="col">Subject</th><th scope="col">Trigger</th>'
        '<th scope="col">Model</th><th scope="col">Tokens in/out</th><th scope="col">Tools</th><th scope="col">ms</th>'
        '<th scope="col">Conversation</th></tr></thead><tbody>{}</tbody></table><nav class="pager" aria-label="Pages">{}</nav>',
        agent_nav(name, "Timeline"),
        form,
        name,
        tl.page + 1,
        join(rows) or Html('<tr><td colspan="9">No turns match.</td></tr>'),
        join(pager, " · "),
    )
    return page("Timeline", body, current="/timeline")


SHOW_MAX = 2_000_000
"""Characters of a commit's diff shown on its page (a hand edit can touch thousands of files)."""


def _diff(text: str, unfold: Callable[[str], bool]) -> tuple[str, Html]:
    """`git show` output as its head (message, stats) and one foldable section per file,
    unfolded where `unfold(title)`; added and removed lines marked."""
    head, _, diff = text.partition("\ndiff --git ")
    sections = []
    for chunk in f"diff --git {diff}".split("\ndiff --git ") if diff else []:
        chunk = chunk if chunk.startswith("diff --git ") else "diff --git " + chunk
        title = chunk.splitlines()[0].removeprefix("diff --git ")
        lines = join(
            render(
                '<span class="{}">{}</span>',
                "add" if ln.startswith("+") else "del" if ln.startswith("-") else "ctx",
                ln + "\n",
            )
            for ln in chunk.splitlines()[1:]
        )
        sections.append(
            render(
                '<details{}><summary>{}</summary><pre class="diff">{}</pre></details>',
                Html(" open") if unfold(title) else Html(""),
                title,
                lines,
            )
        )
    return head, join(sections)


def commit_page(home: Home, name: str, sha: str) -> Html:
    agent = Agent.open(home, name)
    text = gitstore.show(agent.path, queries.check_sha(sha))
    if len(text) > SHOW_MAX:
        text = (
            text[:SHOW_MAX]
            + f"\n… cut at {SHOW_MAX:,} characters: `anima show {name} {sha[:12]}` shows it all"
        )
    head, sections = _diff(text, lambda title: " a/memory/" in f" {title}")
    body = render(
        '{}<pre class="commit">{}</pre><h2>Files</h2><p class="muted">Memory changes are unfolded.</p>{}'
        '<p><a href="/agents/{}/undo/{}">Undo this turn…</a></p>',
        agent_nav(name, ""),
        head,
        sections,
        name,
        sha,
    )
    return page(f"{name} · commit {sha[:8]}", body)


def undo_page(home: Home, name: str, sha: str, csrf: str) -> Html:
    target = audit.resolve(Agent.open(home, name), queries.check_sha(sha))
    body = render(
        "<p>Revert turn <code>{}</code> “{}” with <code>git revert</code>? Both stay in the history; the next turn "
        'no longer sees this turn\'s history, memory edits or files.</p>{} <a href="/agents/{}/commit/{}">Cancel</a>',
        target.short,
        target.subject,
        post_button(
            f"/agents/{name}/undo/{target.sha}", "Yes, undo this turn", csrf, confirm="yes"
        ),
        name,
        target.sha,
    )
    return page(f"Undo a turn of {name}", body)


# -- charts -----------------------------------------------------------------------------------


def stats_page(home: Home, name: str) -> Html:
    agent = Agent.open(home, name)
    days = queries.per_day(agent.path)
    charts = join(
        [
            bar_chart("Turns per day", [(d.day, d.turns) for d in days], "turns"),
            bar_chart("Tokens per day (in + out)", [(d.day, d.tokens) for d in days], "tokens"),
            bar_chart("Mean turn time per day", [(d.day, d.mean_ms) for d in days], "ms"),
        ]
    )
    turns = sum(d.turns for d in days)
    summary = (
        render(
            "<p>{} to {}: {} turns, {} tokens (in + out), {} ms per turn on average.</p>",
            days[0].day,
            days[-1].day,
            turns,
            sum(d.tokens for d in days),
            round(sum(d.duration_ms for d in days) / turns) if turns else 0,
        )
        if days
        else Html("<p>No turns yet.</p>")
    )
    return page(
        f"{name} · charts", join([agent_nav(name, "Charts"), summary, charts if days else Html("")])
    )


AGENTS_PER_CHART = 40


def agents_chart_page(home: Home, params: dict[str, str]) -> Html:
    """Turns and tokens of the last 30 days (to today, UTC) side by side, a page of agents at
    a time (each agent's figures come from its own git log)."""
    names = home.agent_names()
    try:
        number = max(int(params.get("page", "0")), 0)
    except ValueError:
        number = 0
    shown = names[number * AGENTS_PER_CHART : (number + 1) * AGENTS_PER_CHART]
    today = dt.datetime.now(dt.UTC).date()
    totals = [(n, queries.per_day(home.agents_dir / n, end=today)) for n in shown]
    pager = []
    if number > 0:
        pager.append(render('<a rel="prev" href="/charts?page={}">Previous agents</a>', number - 1))
    if len(names) > (number + 1) * AGENTS_PER_CHART:
        pager.append(render('<a rel="next" href="/charts?page={}">More agents</a>', number + 1))
    body = join(
        [
            render("<p>The 30 days to {} (UTC), per agent.</p>", today.isoformat()),
            bar_chart(
                "Turns per agent", [(n, sum(d.turns for d in ds)) for n, ds in totals], "turns"
            ),
            bar_chart(
                "Tokens per agent (in + out)",
                [(n, sum(d.tokens for d in ds)) for n, ds in totals],
                "tokens",
            ),
            render('<nav class="pager" aria-label="Pages">{}</nav>', join(pager, " · ")),
        ]
    )
    return page("Charts", body if shown else Html("<p>No agents yet.</p>"), current="/charts")


# -- memory -----------------------------------------------------------------------------------


def memory_page(home: Home, name: str, query: str) -> Html:
    agent = Agent.open(home, name)
    core = memory.core(agent.memory_dir, agent.config.budget)
    idx = memory.index(agent.memory_dir, limit=10_000)

    def note_link(rel: str, desc: str) -> Html:
        return render(
            '<li><a href="/agents/{}/memory/note?{}">{}</a> <span class="muted">{}</span></li>',
            name,
            urlencode({"path": rel}),
            rel,
            desc,
        )

    groups: dict[str, list[Html]] = {"Notes": [], "People": [], "Journal": []}
    for rel, desc in idx.notes:
        key = (
            "People"
            if rel.startswith("people/")
            else "Journal"
            if rel.startswith(memory.JOURNAL + "/")
            else "Notes"
        )
        groups[key].append(note_link(rel, desc))
    lists = join(
        render("<h2>{}</h2><ul>{}</ul>", k, join(v) or Html('<li class="muted">none</li>'))
        for k, v in groups.items()
    )
    hits = Html("")
    if query.strip():
        found = search.search(agent.path, query[:500], limit=20)
        hits = render(
            '<h2>Results for “{}”</h2><ol class="hits">{}</ol>',
            query,
            join(
                render(
                    '<li><a href="{}">{}</a> <span class="muted">{} {}</span><p>{}</p></li>',
                    _hit_link(name, h),
                    h.title or h.path,
                    h.kind,
                    h.date,
                    h.snippet,
                )
                for h in found
            )
            or Html("<li>Nothing found.</li>"),
        )
    body = render(
        '{}<form method="get" class="filters" role="search"><label for="q">Search memory and history</label>'
        '<input id="q" name="q" type="search" value="{}"><button type="submit">Search</button></form>{}'
        '<h2>MEMORY.md</h2><p><meter min="0" max="{}" value="{}" aria-label="core memory used">{}</meter> {} / {} characters{}</p>'
        '<pre class="note">{}</pre>{}',
        agent_nav(name, "Memory"),
        query,
        hits,
        core.limit,
        min(core.used, core.limit),
        core.used,
        core.used,
        core.limit,
        " (over the cap: the model sees it cut)" if core.truncated else "",
        core.text,
        lists,
    )
    return page(f"{name} · memory", body)


def _hit_link(name: str, hit: search.Hit) -> str:
    """A memory hit opens its note; a history hit its conversation."""
    if hit.kind == "memory":
        return f"/agents/{name}/memory/note?{urlencode({'path': hit.path.removeprefix('memory/')})}"
    return f"/agents/{name}/chat?{urlencode({'c': hit.title})}"


def note_page(home: Home, name: str, rel: str) -> Html:
    agent = Agent.open(home, name)
    path = queries.confined(agent.memory_dir, rel)
    changes = join(
        render(
            '<li><a href="/agents/{}/commit/{}">{}</a> <span class="muted">{}</span> {}</li>',
            name,
            e.sha,
            e.short,
            _when(e.date),
            "; ".join(why) or e.subject,
        )
        for e, why in queries.note_history(
            agent.path, path.relative_to(agent.memory_dir).as_posix()
        )
    )
    body = render(
        '{}<pre class="note">{}</pre><h2>History</h2><ol class="history">{}</ol>'
        '<p><a href="/agents/{}/memory">Back to memory</a></p>',
        agent_nav(name, "Memory"),
        queries.read_text(path),
        changes or Html('<li class="muted">No commit names this note.</li>'),
        name,
    )
    return page(f"{name} · {rel}", body)


# -- approvals --------------------------------------------------------------------------------


_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """Bidirectional controls shown as \\u{...}: a diff never reads other than it applies
    (proposals.diff already shows the C0/C1 control characters as \\xNN)."""
    return _BIDI.sub(lambda m: f"\\u{{{ord(m.group()):04x}}}", text)


def _checks(p: proposals.Proposal) -> Html:
    if p.passed:
        return Html('<span class="ok">passed</span>')
    return render(
        '<span class="warn">failed</span><ul class="problems">{}</ul>',
        join(render("<li>{}</li>", visible(problem)) for problem in p.problems),
    )


def _decide(name: str, p: proposals.Proposal, csrf: str, back: str) -> Html:
    """Approve (a failing one only with its "force" box ticked) and reject (with why)."""
    url = f"/agents/{name}/proposals/{p.id}"
    force = (
        Html("")
        if p.passed
        else Html(
            '<label class="force"><input type="checkbox" name="force" value="yes"> '
            "apply although its checks fail</label> "
        )
    )
    return render(
        '<form method="post" action="{}" class="decide">{}'
        '<input type="hidden" name="decision" value="approve"><input type="hidden" name="back" value="{}">'
        '{}<button type="submit">Approve {}</button></form>'
        '<form method="post" action="{}" class="decide">{}'
        '<input type="hidden" name="decision" value="reject"><input type="hidden" name="back" value="{}">'
        '<label>Why <input name="why" maxlength="2000" size="16"></label> '
        '<button type="submit" class="secondary">Reject {}</button></form>',
        url,
        csrf_field(csrf),
        back,
        force,
        p.id,
        url,
        csrf_field(csrf),
        back,
        p.id,
    )


def proposals_table(
    found: Sequence[tuple[str, proposals.Proposal]], csrf: str, *, back: str, caption: str
) -> Html:
    """Proposals with their reason, files and checks; the open ones with their decision."""
    rows = [
        render(
            '<tr><td><a href="/agents/{}/chat">{}</a></td><td><a href="/agents/{}/proposals/{}">{}</a>'
            ' <span class="muted">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            name,
            name,
            name,
            p.id,
            p.id,
            _when(p.date),
            visible(p.reason),
            ", ".join(p.files),
            _checks(p),
            p.state,
            _decide(name, p, csrf, back) if p.state == "open" else Html(""),
        )
        for name, p in found
    ]
    return render(
        '<table class="proposals"><caption>{}</caption><thead><tr><th scope="col">Agent</th><th scope="col">Proposal</th>'
        '<th scope="col">Reason</th><th scope="col">Files</th><th scope="col">Checks</th><th scope="col">State</th>'
        '<th scope="col">Decision</th></tr></thead><tbody>{}</tbody></table>',
        caption,
        join(rows) or Html('<tr><td colspan="7">No proposals.</td></tr>'),
    )


def proposals_page(home: Home, name: str, csrf: str) -> Html:
    agent = Agent.open(home, name)
    found = proposals.proposals(agent)
    body = join(
        [
            agent_nav(name, "Proposals"),
            Html(
                "<p>Changes the agent proposed to itself (persona, always.md, skills, agent.toml "
                "keys). Approving applies one as a commit on its main branch.</p>"
            ),
            proposals_table(
                [(name, p) for p in found if p.state == "open"],
                csrf,
                back="proposal",
                caption="Open",
            ),
            proposals_table(
                [(name, p) for p in found if p.state != "open"],
                csrf,
                back="proposal",
                caption="Decided",
            ),
        ]
    )
    return page(f"{name} · proposals", body)


def proposal_page(home: Home, name: str, pid: str, csrf: str) -> Html:
    agent = Agent.open(home, name)
    p = proposals.get(agent, pid)
    text = visible(proposals.diff(agent, p.id))
    if len(text) > SHOW_MAX:
        text = text[:SHOW_MAX] + f"\n… cut at {SHOW_MAX:,} characters"
    head, sections = _diff(text, lambda title: True)
    applied = Html("")
    if p.state == "approved":
        sha = proposals.applied_commit(agent, p.id)
        applied = render(
            '<p class="ok">Applied as <a href="/agents/{}/commit/{}">{}</a>.</p>',
            name,
            sha,
            sha[:8],
        )
    body = render(
        '{}<dl class="facts"><dt>State</dt><dd>{}</dd><dt>Reason</dt><dd>{}</dd><dt>Files</dt><dd>{}</dd>'
        "<dt>Checks</dt><dd>{}</dd><dt>Proposed</dt><dd>{}</dd></dl>{}{}"
        '<h2>Changes</h2>{}<h2>Commit</h2><pre class="commit">{}</pre>',
        agent_nav(name, "Proposals"),
        p.state,
        visible(p.reason),
        ", ".join(p.files),
        _checks(p),
        _when(p.date),
        applied,
        render('<div class="decision">{}</div>', _decide(name, p, csrf, "proposal"))
        if p.state == "open"
        else Html(""),
        sections,
        head,
    )
    return page(f"{name} · proposal {p.id}", body)


def open_proposals(home: Home) -> tuple[list[tuple[str, proposals.Proposal]], list[str]]:
    """Every agent's open proposals, newest first, and what could not be read (per agent)."""
    found, problems = [], []
    for name in home.agent_names():
        try:
            found += [(name, p) for p in proposals.proposals(Agent.open(home, name))]
        except (AnimaError, OSError) as exc:
            problems.append(f"{name}: {exc}")
    return sorted(
        ((n, p) for n, p in found if p.state == "open"), key=lambda np: np[1].date, reverse=True
    ), problems


def approvals_page(home: Home, csrf: str) -> Html:
    requests = [
        render(
            '<tr><td>{}</td><td><code>{}</code></td><td>{} <span class="muted">{}</span></td><td>{}</td><td>{} {}</td></tr>',
            r.channel,
            r.code,
            r.name,
            r.user,
            _when(r.created),
            post_button(
                "/approvals/pairing",
                f"Approve {r.name or r.user}",
                csrf,
                channel=r.channel,
                code=r.code,
                decision="approve",
            ),
            post_button(
                "/approvals/pairing",
                f"Deny {r.name or r.user}",
                csrf,
                channel=r.channel,
                code=r.code,
                decision="deny",
            ),
        )
        for r in access.pending(home)
    ]
    letters = [
        render(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><pre>{}</pre></td><td><pre>{}</pre></td><td>{} {}</td></tr>",
            d.channel,
            d.id,
            d.to,
            d.body,
            d.reason,
            post_button(
                "/approvals/dead-letter", "Retry", csrf, channel=d.channel, id=d.id, action="retry"
            ),
            post_button(
                "/approvals/dead-letter", "Drop", csrf, channel=d.channel, id=d.id, action="drop"
            ),
        )
        for d in queries.dead_letters(home)
    ]
    waiting, unreadable = open_proposals(home)
    body = render(
        '<h2 id="proposals">Proposals</h2>{}{}'
        '<h2 id="pairing">Pairing requests</h2><table><thead><tr><th scope="col">Channel</th><th scope="col">Code</th>'
        '<th scope="col">Who</th><th scope="col">Asked</th><th scope="col">Decision</th></tr></thead><tbody>{}</tbody></table>'
        '<h2 id="dead">Dead letters</h2><table><thead><tr><th scope="col">Channel</th><th scope="col">Id</th><th scope="col">To</th>'
        '<th scope="col">Message</th><th scope="col">Why</th><th scope="col">Decision</th></tr></thead><tbody>{}</tbody></table>',
        proposals_table(waiting, csrf, back="approvals", caption="Open proposals of every agent"),
        join(render('<p class="warn">{}</p>', u) for u in unreadable),
        join(requests) or Html('<tr><td colspan="5">No open requests.</td></tr>'),
        join(letters) or Html('<tr><td colspan="6">No dead letters.</td></tr>'),
    )
    return page("Approvals", body, current="/approvals")


def error_page(status_code: int, message: str) -> Html:
    return page(
        "Refused" if status_code < 500 else "Error",
        render(
            '<p class="warn" role="alert">{}</p><p><a href="/">Back to the agents</a></p>', message
        ),
    )


def proposal_error_page(name: str, pid: str, message: str) -> Html:
    """A proposal that could not be decided: why (nothing changed), and the way back to it."""
    back = (
        render('<a href="/agents/{}/proposals/{}">Back to proposal {}</a>', name, pid, pid)
        if name and re.fullmatch(r"[0-9a-f]{6}", pid)
        else Html('<a href="/approvals#proposals">Back to the approvals</a>')
    )
    return page(
        "Proposal not decided",
        render(
            '<p class="warn" role="alert">{}</p><p>Nothing was changed.</p><p>{}</p>', message, back
        ),
    )
