"""`anima market add-index|search|list-indexes|remove-index`: marketplace indexes (git
repositories with an index.toml of agent templates and skills)."""

from __future__ import annotations

import click

from anima.cli.app import AnimaGroup, console, err_console, pass_home, plain, tabulate
from anima.home import Home


@click.group(cls=AnimaGroup)
def market() -> None:
    """Marketplace indexes: git repositories listing agent templates and skills by name."""


def _warn(warnings: list[str]) -> None:
    from rich.text import Text

    for warning in warnings:
        err_console.print(Text(f"warning: {warning}", style="yellow"))


@market.command("add-index")
@click.argument("url")
@click.option("--name", help="What to call it (default: the repository's name).")
@pass_home
def add_index(home: Home, url: str, name: str | None) -> None:
    """Add the index at git URL (fetched now: one that cannot be read is not added)."""
    from anima.market import add_index as add

    index, found = add(home, url, name)
    agents = sum(1 for x in found if x.kind == "agents")
    console.print(
        *plain(
            f"added index {index.name} ({index.url}): {agents} agent(s), "
            f"{len(found) - agents} skill(s)"
        )
    )


@market.command()
@click.argument("word", default="")
@click.option("--refresh", is_flag=True, help="Fetch every index now (else once a day).")
@pass_home
def search(home: Home, word: str, refresh: bool) -> None:
    """Agent templates and skills whose name or description holds WORD."""
    from anima.market import indexes
    from anima.market import search as find

    if not indexes(home):
        console.print("no marketplace index yet: anima market add-index GIT_URL")
        return
    hits, warnings = find(home, word, refresh=refresh)
    _warn(warnings)
    if not hits:
        console.print(f"nothing matches {word!r}")
        return
    table = tabulate("kind", "name", "description", "url", "index")
    for x in hits:
        table.add_row(*plain(x.kind[:-1], x.name, x.description, x.url, x.index))
    console.print(table)
    console.print("install: anima skills add NAME · anima new AGENT --from NAME", style="dim")


@market.command("list-indexes")
@pass_home
def list_indexes(home: Home) -> None:
    """The indexes added."""
    from anima.market import indexes

    found = indexes(home)
    if not found:
        console.print("no marketplace index yet: anima market add-index GIT_URL")
        return
    table = tabulate("name", "url")
    for index in found:
        table.add_row(*plain(index.name, index.url))
    console.print(table)


@market.command("remove-index")
@click.argument("name")
@pass_home
def remove_index(home: Home, name: str) -> None:
    """Forget index NAME (and its cached copy)."""
    from anima.market import remove_index as remove

    index = remove(home, name)
    console.print(*plain(f"removed index {index.name} ({index.url})"))
