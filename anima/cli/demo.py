"""demo: one command that shows a real turn, offline."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.text import Text

from anima.cli.app import console


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Make the demo home here and keep it (default: a temporary directory).",
)
def demo(keep: str | None) -> None:
    """Create a throwaway home and agent, talk to it on the offline model, show the git log."""
    from anima import gitstore
    from anima.demo import Exchange, run_demo

    def show(ex: Exchange) -> None:
        console.print(Text.assemble(("you → ", "bold cyan"), ex.said))
        console.print(Text.assemble(("arya → ", "bold green"), ex.reply))
        console.print(Text(f"   commit {ex.commit}: {ex.subject}\n", style="dim"))

    with tempfile.TemporaryDirectory(prefix="anima-demo-") as tmp:
        root = Path(keep).absolute() if keep else Path(tmp) / "home"
        console.print(Text(f"demo home: {root}\n", style="dim"))
        run_demo(root, show)
        agent_dir = root / "agents" / "arya"
        console.print("[bold]git log of arya[/bold] (every turn is a commit):")
        console.print(gitstore.log_text(agent_dir), markup=False)
        console.print(Text("\nmemory/MEMORY.md:", style="bold"))
        console.print(Text((agent_dir / "memory/MEMORY.md").read_text()))
