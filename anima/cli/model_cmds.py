"""model: show or set the endpoint and model an agent's turns use."""

from __future__ import annotations

import json

import click

from anima.cli.app import console, pass_home
from anima.home import Home


@click.command("model")
@click.argument("name")
@click.argument("entry", metavar="[PROVIDER/MODEL]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (when showing).")
@pass_home
def model(home: Home, name: str, entry: str | None, as_json: bool) -> None:
    """Show NAME's provider and model and where each is set; or set them in its agent.toml
    (committed as a hand edit). PROVIDER is an endpoint: auto, a built-in kind (anthropic,
    openai, ollama, offline) or a [providers.NAME] table of anima.toml. MODEL may hold slashes
    (openrouter/meta-llama/llama-3.3-70b-instruct); PROVIDER alone clears the model."""
    from rich.markup import escape

    from anima.agent import Agent, effective_model

    agent = Agent.open(home, name)
    if entry is None:
        used = effective_model(agent)
        if as_json:
            console.print_json(json.dumps(used.__dict__))
            return
        console.print(
            f"{escape(name)}: {escape(used.provider)}/{escape(used.model)} "
            f"(provider from {escape(used.provider_from)}, model from {escape(used.model_from)})"
        )
        return
    from anima.agent_model import set_model

    change = set_model(agent, entry)
    chosen = change.provider + (f"/{change.model}" if change.model else "")
    done = f"committed {change.commit[:8]}" if change.commit else "no change"
    console.print(f"{done}: {escape(name)} uses {escape(chosen)}")
    if change.key_env:
        console.print(f"[yellow]note:[/yellow] set {escape(change.key_env)} for the runtime")
