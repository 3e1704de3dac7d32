"""`anima chat NAME`: the file-backed REPL. Input with prompt_toolkit; every line becomes an
inbox message; replies stream from run/stream/ and outbox/. Slash commands for the operator."""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import termios
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click
from rich.text import Text

from anima.cli.app import console, err_console, pass_home, quiet_libraries
from anima.home import Home

if TYPE_CHECKING:
    from anima.chat import BackgroundRuntime

COMMANDS = {
    "/load": "NAME  talk to another agent",
    "/agents": "      list agents",
    "/status": "      runtime and agents",
    "/history": "[n]   the last n turns of this conversation",
    "/memory": "      the agent's core memory and notes",
    "/log": "[n]   the agent's last n turns (git log)",
    "/undo": "      revert the agent's last turn (git revert), after confirmation",
    "/proposals": "[show|approve|reject ID]  what the agent proposed to change about itself",
    "/new": "      start a new conversation thread",
    "/help": "      this list",
    "/quit": "      leave (or Ctrl-D)",
}
_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z~]|O.|.)")


def split_typeahead(raw: bytes) -> tuple[list[str], str]:
    """Keys typed while a reply streamed: the lines finished with Enter, and the unfinished rest
    (backspace applied; arrow keys and other control keys dropped)."""
    text = _ESCAPES.sub("", raw.decode("utf-8", "ignore")).replace("\r", "\n")
    out: list[str] = []
    for ch in text:
        if ch in "\x7f\x08":
            if out and out[-1] != "\n":
                out.pop()
        elif ch == "\n" or ch >= " ":
            out.append(ch)
    *lines, rest = "".join(out).split("\n")
    return [line for line in lines if line.strip()], rest


_BODY = re.compile(r"<(?:message|untrusted)\b[^>]*>\n(.*?)\n</(?:message|untrusted)>", re.S)


@contextlib.contextmanager
def ctrl_c_as_key(stop: threading.Event, typeahead: bytearray) -> Iterator[None]:
    """While a reply streams, read Ctrl-C as a key instead of letting the terminal send SIGINT
    to the whole process group, which would also kill the git commands of the runtime running
    inside this chat. Other keys typed meanwhile are kept in `typeahead` for the next prompt."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
    termios.tcsetattr(fd, termios.TCSANOW, new)
    done = threading.Event()

    def read_keys() -> None:
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                data = os.read(fd, 256)
                if b"\x03" in data:
                    stop.set()
                typeahead.extend(data.replace(b"\x03", b""))

    reader = threading.Thread(target=read_keys, daemon=True)
    reader.start()
    try:
        yield
    finally:
        done.set()
        reader.join()
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


class Repl:
    def __init__(self, home: Home, agent: str, ask: Callable[[str], str]):
        from anima.chat import ChatSession
        from anima.peer import split_address

        self.home = home
        self.remote = split_address(agent) is not None
        """An agent of another home (`gendry@vps`): its own home's runtime answers."""
        if self.remote:
            from anima.remote_chat import RemoteSession

            self.session: Any = RemoteSession(home, agent)
        else:
            from anima.errors import AnimaError
            from anima.lease import load

            known = load(home, agent)
            if known is not None and known.state == "moved" and known.to_peer:
                raise AnimaError(
                    f"{agent} moved to {known.to_host}: talk to it there, "
                    f"anima chat {agent}@{known.to_peer}"
                )
            self.session = ChatSession(home, agent)
        self.ask = ask
        self._printing = threading.Lock()
        self.typeahead = bytearray()
        """Keys typed while a reply streamed, for the next prompt."""
        self.background: BackgroundRuntime | None = None
        """The runtime this chat runs inside itself when no `anima run` is live."""

    # -- the runtime that answers ---------------------------------------------------------------
    def ensure_runtime(self) -> None:
        """Host the agents in this chat when no runtime is live: at the start, and whenever the
        `anima run` this chat was attached to stops (a chat must never wait on nobody)."""
        from anima.chat import BackgroundRuntime, runtime_live
        from anima.errors import AnimaError

        if self.remote or self.background is not None or runtime_live(self.home):
            return
        background = BackgroundRuntime(self.home)
        try:
            background.start()
        except AnimaError:
            if runtime_live(self.home):  # another `anima run` started meanwhile: use that one
                return
            raise
        self.background = background

    def host_if_gone(self) -> None:
        from anima.chat import runtime_live

        if not self.remote and self.background is None and not runtime_live(self.home):
            self.say(
                "\n(anima run stopped: the agents run inside this chat now, until you leave)",
                "yellow",
            )
            self.ensure_runtime()

    # -- output ---------------------------------------------------------------------------------
    def say(self, text: str | Text, style: str = "") -> None:
        with self._printing:
            console.print(text if isinstance(text, Text) else Text(text, style=style))

    def render(self, agent: str) -> Callable[[dict[str, Any]], None]:
        state = {"started": False, "midline": False}

        def on_event(ev: dict[str, Any]) -> None:
            with self._printing:
                if not state["started"]:
                    console.print(Text(f"{agent} › ", style="bold green"), end="")
                    state["started"] = True
                if ev["t"] == "text":
                    sys.stdout.write(ev["v"])
                    state["midline"] = not ev["v"].endswith("\n")
                elif ev["t"] == "tool":
                    sys.stdout.write(
                        ("\n" if state["midline"] else "") + f"  ⚙ {ev['name']}({ev['args']}) "
                    )
                    state["midline"] = True
                elif ev["t"] == "tool_result":
                    sys.stdout.write("ok\n" if ev["ok"] else f"error: {ev.get('detail', '')}\n")
                    state["midline"] = False
                elif ev["t"] == "retry":
                    wait = f" in {ev['delay']:.1f} s" if "delay" in ev else ""
                    sys.stdout.write(
                        ("\n" if state["midline"] else "") + f"  ↻ retrying{wait}: {ev['reason']}\n"
                    )
                    state["midline"] = False
                sys.stdout.flush()

        self._state = state
        return on_event

    # -- a message ------------------------------------------------------------------------------
    def message(self, text: str) -> None:
        self.host_if_gone()
        sent = self.session.send(text)
        for msg in sent:
            on_event = self.render(msg.to)
            stop = threading.Event()
            try:
                with ctrl_c_as_key(stop, self.typeahead):
                    out = self.session.follow(msg, on_event, stop=stop, watchdog=self.host_if_gone)
            except KeyboardInterrupt:
                out = None
            if out is None or out.interrupted:
                self.say(
                    f"\n(stopped waiting; {msg.to}'s turn goes on and will be committed)", "dim"
                )
                return
            started, midline = self._state["started"], self._state["midline"]
            if out.error:
                self.say(
                    ("\n" if midline else "") + f"{msg.to} ✗ turn failed, the message stays "
                    f"pending and will be retried: {out.error}",
                    "red",
                )
            elif not started and out.reply:
                self.say(Text.assemble((f"{msg.to} › ", "bold green"), out.reply.rstrip()))
            elif started:
                sys.stdout.write("\n" if midline else "")
                sys.stdout.flush()
            elif out.reply is None:
                self.say(f"{msg.to} (no reply)", "dim")

    def show_incoming(self) -> None:
        for m in self.session.incoming():
            self.say(Text.assemble((f"{m.sender} › ", "bold magenta"), m.body.rstrip()))

    # -- commands -------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        handler = getattr(self, "cmd_" + name[1:], None) if name in COMMANDS else None
        if handler is None:
            near = [c for c in COMMANDS if c.startswith(name[:3])] or list(COMMANDS)
            self.say(f"unknown command {name}; try {', '.join(near)} (or /help)", "red")
            return True
        return handler(arg) is not False

    def cmd_quit(self, arg: str) -> bool:
        return False

    def cmd_help(self, arg: str) -> None:
        for c, d in COMMANDS.items():
            self.say(f"  {c:<9} {d}")
        self.say("  @NAME text  send to another agent;  @all text  send to every agent", "dim")

    def cmd_load(self, arg: str) -> None:
        from anima.chat import ChatSession

        if not arg:
            self.say("usage: /load NAME", "red")
            return
        self.session = ChatSession(
            self.home, arg, conversation=self.session.conversation, shown=self.session.shown
        )
        self.say(f"now talking to {arg}", "dim")

    def cmd_agents(self, arg: str) -> None:
        for name in self.home.agent_names():
            self.say(("* " if name == self.session.agent else "  ") + name)

    def cmd_status(self, arg: str) -> None:
        from anima import status

        data = status.collect(self.home)
        self.say(f"runtime: {'live, pid ' + str(data['pid']) if data['live'] else 'not running'}")
        for name, a in data["agents"].items():
            last = a["last_turn"]
            self.say(
                f"  {name}: {a['pending']} pending, last turn "
                f"{last['commit'] + ' ' + last['at'] if last else '-'}"
            )

    def cmd_history(self, arg: str) -> None:
        from anima import history

        n = int(arg) if arg.isdigit() else 5
        agent_dir = self.home.agents_dir / self.session.agent
        for turn in history.recent(agent_dir, self.session.conversation, n):
            for m in turn:
                for b in m["content"]:
                    if b["type"] == "text" and m["role"] == "user":
                        for body in _BODY.findall(b["text"]):
                            self.say(Text.assemble(("you › ", "bold cyan"), body))
                    elif b["type"] == "text" and b["text"].strip():
                        self.say(
                            Text.assemble((f"{self.session.agent} › ", "bold green"), b["text"])
                        )
                    elif b["type"] == "tool_use":
                        self.say(f"  ⚙ {b['name']}", "dim")

    def cmd_memory(self, arg: str) -> None:
        from anima import context
        from anima.agent import Agent

        self.say(context.memory_segment(Agent(self.home, self.session.agent)))

    def cmd_log(self, arg: str) -> None:
        from anima import audit
        from anima.agent import Agent

        for e in audit.turns(
            Agent(self.home, self.session.agent), limit=int(arg) if arg.isdigit() else 10
        ):
            self.say(f"{e.short} {e.date} {e.subject}")

    def cmd_undo(self, arg: str) -> None:
        from anima import audit
        from anima.agent import Agent

        agent = Agent(self.home, self.session.agent)
        last = audit.resolve(agent, None)
        if self.ask(f"Revert {last.short} “{last.subject}”? [y/N] ").strip().lower() not in (
            "y",
            "yes",
        ):
            self.say("nothing reverted", "dim")
            return
        target, sha = audit.undo(agent, last.sha)
        self.say(f"reverted {target.short} with commit {sha[:8]}", "yellow")

    def cmd_proposals(self, arg: str) -> None:
        from anima import proposals
        from anima.agent import Agent

        agent = Agent(self.home, self.session.agent)
        verb, _, pid = arg.partition(" ")
        pid = pid.strip()
        if verb == "approve" and pid:
            sha = proposals.approve(agent, pid, by="the owner in anima chat")
            self.say(f"approved {pid}: applied as commit {sha[:8]}", "yellow")
        elif verb == "reject" and pid:
            proposals.reject(agent, pid, by="the owner in anima chat")
            self.say(f"rejected {pid}; its record is kept", "yellow")
        elif verb == "show":
            p = proposals.latest(agent, pid or None)
            self.say(f"checks: {'passed' if p.passed else 'FAILED: ' + '; '.join(p.problems)}")
            self.say(proposals.diff(agent, p.id))
        elif verb:
            self.say("usage: /proposals [show [ID] | approve ID | reject ID]", "red")
        else:
            found = proposals.proposals(agent)
            for p in found:
                checks = "passed" if p.passed else "FAILED"
                self.say(f"  {p.id} {p.state:<8} checks {checks:<6} {p.reason[:70]}")
            if not found:
                self.say(f"{agent.name} has no proposals", "dim")

    def cmd_new(self, arg: str) -> None:
        self.say(f"new conversation: {self.session.new_conversation()}", "dim")


def _completer(home: Home) -> Any:
    from prompt_toolkit.completion import Completer, Completion

    class ChatCompleter(Completer):
        def get_completions(self, document: Any, complete_event: Any) -> Iterable[Completion]:
            text = document.text_before_cursor
            word = document.get_word_before_cursor(WORD=True)
            if text.startswith("/") and " " not in text:
                for c in COMMANDS:
                    if c.startswith(text):  # a space after a command that takes an argument
                        takes_arg = not COMMANDS[c].startswith(" ")
                        yield Completion(c + " " * takes_arg, start_position=-len(text), display=c)
            elif word.startswith("@") or text.startswith("/load "):
                prefix = word.lstrip("@")
                for n in (
                    ["all", *home.agent_names()] if word.startswith("@") else home.agent_names()
                ):
                    if n.startswith(prefix):
                        yield Completion(
                            ("@" if word.startswith("@") else "") + n, start_position=-len(word)
                        )

    return ChatCompleter()


def _prompt_session(home: Home) -> Any:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory
    from prompt_toolkit.key_binding import KeyBindings

    keys = KeyBindings()

    @keys.add("escape", "enter")  # Alt-Enter: a new line; Enter sends
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    home.run_dir.mkdir(parents=True, exist_ok=True)
    return PromptSession(
        history=FileHistory(str(home.run_dir / "chat_history")),
        completer=_completer(home),
        key_bindings=keys,
        complete_while_typing=False,
    )


@click.command()
@click.argument("name")
@pass_home
def chat(home: Home, name: str) -> None:
    """Talk to NAME. Lines go to its inbox; replies stream back. /help for commands."""
    import logging

    from anima import mailbox
    from anima.chat import runtime_live

    home.require()
    mailbox.allow_leases()  # here, in the main thread: an in-process runtime takes files at once
    logging.basicConfig(
        filename=str(home.run_dir / "chat.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_libraries(verbose=False)
    interactive = sys.stdin.isatty()
    session = _prompt_session(home) if interactive else None

    def ask(prompt: str) -> str:
        if session is not None:
            return str(session.prompt(prompt))
        sys.stdout.write(prompt)
        sys.stdout.flush()
        return sys.stdin.readline()

    repl = Repl(home, name, ask)
    if repl.remote:
        repl.say(f"{name}: lines go to its home over the peer connection", "dim")
    elif runtime_live(home):
        repl.say("anima run is live: this chat only writes and reads files", "dim")
    else:
        repl.say("no anima run is live: running one inside this chat until you leave", "dim")
        repl.ensure_runtime()
    repl.say(
        f"talking to {name} (conversation {repl.session.conversation}); /help for commands", "dim"
    )
    watching = threading.Event()
    watching.set()
    stop = threading.Event()

    def watch_incoming() -> None:
        while not stop.wait(0.2):
            if watching.is_set():
                repl.show_incoming()

    threading.Thread(target=watch_incoming, daemon=True).start()
    try:
        _loop(repl, session, watching)
    finally:
        stop.set()
        if repl.remote:
            repl.session.close()
        if repl.background is not None:
            repl.background.stop()
            if repl.background._thread.is_alive():
                err_console.print("(a turn is still running; it stays pending for the next run)")


def _loop(repl: Repl, session: Any, watching: threading.Event) -> None:
    from anima.errors import AnimaError

    queued: list[str] = []  # lines typed and entered while a reply streamed
    while True:
        lines, partial = split_typeahead(bytes(repl.typeahead))
        repl.typeahead.clear()
        queued += lines
        try:
            if queued:
                line = queued.pop(0)
                repl.typeahead[:0] = partial.encode()  # still unfinished: offer it after this line
                repl.say(f"{repl.session.agent} ‹ {line}")
            elif session is not None:
                from prompt_toolkit.patch_stdout import patch_stdout

                with patch_stdout(raw=True):
                    line = session.prompt(f"{repl.session.agent} ‹ ", default=partial)
            else:
                line = sys.stdin.readline()
                if not line:
                    return
        except EOFError:
            return
        except KeyboardInterrupt:
            continue
        line = line.strip()
        if not line:
            continue
        watching.clear()  # incoming messages wait while a reply is shown
        try:
            if line.startswith("/"):
                if not repl.command(line):
                    return
            else:
                repl.message(line)
        except AnimaError as exc:
            repl.say(f"error: {exc}", "red")
        finally:
            watching.set()
