"""Marketplace indexes: git repositories holding an `index.toml` of names → git URLs.

```toml
[agents.researcher]
url = "https://example.org/anima-researcher.git"
description = "Reads papers and keeps notes"

[skills.pdf-forms]
url = "https://example.org/skills.git#v1:pdf-forms"
description = "Fill in PDF forms"
```

No server of our own: `add-index` records the URL in `$ANIMA_HOME/market/indexes.toml` and
fetches one commit of it (a bare, shallow copy under `market/cache/`; index.toml is read from git
objects, never checked out). Searches refresh an index older than TTL_SECONDS.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from anima import gitsource
from anima.errors import BadSource
from anima.fsutil import write_atomic
from anima.home import Home

INDEX_FILE = "index.toml"
INDEX_MAX_BYTES = 1024 * 1024
TTL_SECONDS = 24 * 3600
Kind = Literal["agents", "skills"]
KINDS: tuple[Kind, ...] = ("agents", "skills")
INDEX_REF = "refs/anima/index"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True)
class Index:
    name: str
    url: str


@dataclass(frozen=True)
class Listing:
    """One entry of an index: an agent template or a skill."""

    kind: Kind
    name: str
    url: str
    description: str
    index: str


def market_dir(home: Home) -> Path:
    return home.root / "market"


def _registry(home: Home) -> Path:
    return market_dir(home) / "indexes.toml"


def _cache(home: Home, name: str) -> Path:
    return market_dir(home) / "cache" / f"{name}.git"


def quote_toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value)


def indexes(home: Home) -> list[Index]:
    """The indexes added, in the order they were added."""
    path = _registry(home)
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadSource(f"{path} is not valid TOML: {exc}") from exc
    table = data.get("indexes", {})
    return [
        Index(name, str(entry.get("url", "")))
        for name, entry in table.items()
        if isinstance(entry, dict)
    ]


def _save(home: Home, found: list[Index]) -> None:
    lines = ["# Marketplace indexes (anima market add-index / remove-index)."]
    for index in found:
        lines += ["", f"[indexes.{index.name}]", f"url = {quote_toml(index.url)}"]
    path = _registry(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n")


def _default_name(url: str) -> str:
    base = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1].removesuffix(".git")
    return re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:40] or "index"


def add_index(home: Home, url: str, name: str | None = None) -> tuple[Index, list[Listing]]:
    """Record index `url` (named `name`, default: the repository's name), fetching it first: an
    index that cannot be fetched or read is not recorded. Returns it and its listings."""
    home.require()
    source = gitsource.parse(url)
    name = name or _default_name(source.url)
    if not _NAME.fullmatch(name):
        raise BadSource(f"index name {name!r} is not valid: lower-case letters, digits, '-', '_'")
    known = indexes(home)
    same = [i for i in known if i.name == name]
    if same:
        raise BadSource(f"an index named {name!r} is already added ({same[0].url}): --name other")
    index = Index(name, str(source) if source.ref else source.url)
    _fetch(home, index)
    try:
        found, _ = _read(home, index)
    except BadSource:
        shutil.rmtree(_cache(home, name), ignore_errors=True)
        raise
    _save(home, [*known, index])
    return index, found


def remove_index(home: Home, name: str) -> Index:
    known = indexes(home)
    gone = [i for i in known if i.name == name]
    if not gone:
        names = ", ".join(i.name for i in known) or "none"
        raise BadSource(f"no index named {name!r} (indexes: {names})")
    _save(home, [i for i in known if i.name != name])
    shutil.rmtree(_cache(home, name), ignore_errors=True)
    return gone[0]


def _fetch(home: Home, index: Index) -> None:
    """One commit of the index into a fresh bare copy, swapped in only when the fetch worked."""
    source = gitsource.parse(index.url)
    cache = _cache(home, index.name)
    fresh = cache.with_name(f".{cache.name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    try:
        gitsource.init_bare(fresh)
        commit = gitsource.fetch(fresh, source.url, source.fetch_ref, depth=1)
        gitsource.git(fresh, "update-ref", INDEX_REF, commit)
        shutil.rmtree(cache, ignore_errors=True)
        fresh.rename(cache)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)


def _stale(home: Home, index: Index) -> bool:
    try:
        age = time.time() - (_cache(home, index.name) / "FETCH_HEAD").stat().st_mtime
    except FileNotFoundError:
        return True
    return age > TTL_SECONDS


def _read(home: Home, index: Index) -> tuple[list[Listing], list[str]]:
    """The listings of a fetched index, and a warning for each entry that was skipped."""
    cache = _cache(home, index.name)
    spec = f"{INDEX_REF}:{INDEX_FILE}"
    size = gitsource.git(cache, "cat-file", "-s", spec, ok=(0, 128)).strip()
    if not size.isdigit():
        raise BadSource(f"index {index.name} ({index.url}) has no {INDEX_FILE} at its top")
    if int(size) > INDEX_MAX_BYTES:
        raise BadSource(
            f"index {index.name}: {INDEX_FILE} is {size} bytes (limit {INDEX_MAX_BYTES})"
        )
    sha = gitsource.git(cache, "rev-parse", spec).strip()
    try:
        data = tomllib.loads(gitsource.blob(cache, sha).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BadSource(f"index {index.name}: {INDEX_FILE} is not valid TOML: {exc}") from exc
    found: list[Listing] = []
    warnings: list[str] = []
    for kind in KINDS:
        table = data.get(kind, {})
        if not isinstance(table, dict):
            warnings.append(f"index {index.name}: [{kind}] is not a table; skipped")
            continue
        for name, entry in table.items():
            listing, why = _listing(kind, name, entry, index.name)
            if listing:
                found.append(listing)
            else:
                warnings.append(f"index {index.name}: {kind}.{name} skipped: {why}")
    return found, warnings


def _listing(kind: Kind, name: str, entry: Any, index: str) -> tuple[Listing | None, str]:
    if not _NAME.fullmatch(name):
        return None, "the name is not lower-case letters, digits, '-', '_'"
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        return None, "no url"
    description = entry.get("description", "")
    if not isinstance(description, str):
        return None, "description is not text"
    try:
        gitsource.parse(entry["url"], with_path=kind == "skills")
    except BadSource as exc:
        return None, str(exc)
    return Listing(kind, name, entry["url"], " ".join(description.split())[:500], index), ""


def listings(home: Home, *, refresh: bool = False) -> tuple[list[Listing], list[str]]:
    """Every entry of every index (refreshed when stale or asked), with warnings: an index that
    cannot be refreshed is read from its last copy."""
    found: list[Listing] = []
    warnings: list[str] = []
    for index in indexes(home):
        if refresh or _stale(home, index):
            try:
                _fetch(home, index)
            except BadSource as exc:
                warnings.append(f"index {index.name} not refreshed: {exc}")
        try:
            got, skipped = _read(home, index)
        except BadSource as exc:
            warnings.append(str(exc))
            continue
        found += got
        warnings += skipped
    return found, warnings


def search(home: Home, word: str, *, refresh: bool = False) -> tuple[list[Listing], list[str]]:
    """Entries whose name or description holds `word` (case-insensitive; empty: all)."""
    needle = word.lower()
    found, warnings = listings(home, refresh=refresh)
    hits = [x for x in found if needle in x.name.lower() or needle in x.description.lower()]
    return hits, warnings


def resolve(home: Home, kind: Kind, spec: str) -> str:
    """`spec` itself when it is a git URL or a path; a bare name is looked up in the indexes.
    Raises BadSource for a name no index lists."""
    if not _NAME.fullmatch(spec) or Path(spec).exists():
        return spec
    if not indexes(home):
        raise BadSource(
            f"{spec!r} is neither a git URL nor an existing path, and no marketplace index is "
            "added (anima market add-index URL)"
        )
    found, _ = listings(home)
    for listing in found:
        if listing.kind == kind and listing.name == spec:
            return listing.url
    raise BadSource(
        f"no {kind[:-1]} named {spec!r} in the marketplace indexes (anima market search)"
    )
