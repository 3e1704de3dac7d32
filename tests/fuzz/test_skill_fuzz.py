"""Fuzzing SKILL.md: random bytes and YAML-ish heads (tags, aliases, nesting, odd types, long
values) through the validator, and hostile relative paths through the skill tool's confinement.
Validation never raises (an invalid skill comes back with a reason); a valid result obeys every
rule of the spec; a path is either inside the skill's folder or a ToolError."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from anima import skills
from anima.errors import ToolError
from tests.fuzz import examples

NAMES = st.one_of(
    st.sampled_from(["pdf", "a", "a-b", "-a", "a-", "a--b", "A", "x" * 64, "x" * 65, "ünï", ""]),
    st.text(alphabet="abz09-_A. \n", max_size=70),
)
SCALARS = st.one_of(
    st.text(max_size=1100),
    st.integers(),
    st.booleans(),
    st.none(),
    st.sampled_from(["!!python/object/apply:os.system [id]", "*a", "&a x", "[1, {a: b}]", "{}"]),
)


def _yaml(value: object) -> str:
    if isinstance(value, str) and value.startswith(("!!", "*", "&", "[", "{")):
        return value  # hostile YAML, as written
    import json

    return json.dumps(value)


@st.composite
def heads(draw: st.DrawFn) -> str:
    keys = draw(
        st.lists(
            st.sampled_from(
                [
                    "name",
                    "description",
                    "license",
                    "compatibility",
                    "metadata",
                    "allowed-tools",
                    "x",
                ]
            ),
            max_size=7,
        )
    )
    lines = []
    for key in keys:
        if key == "name":
            lines.append(f"name: {_yaml(draw(NAMES))}")
        elif key == "metadata":
            value = draw(st.dictionaries(st.text(max_size=5), SCALARS, max_size=3))
            lines.append(f"metadata: {_yaml(value)}")
        else:
            lines.append(f"{key}: {_yaml(draw(SCALARS))}")
    return "---\n" + "\n".join(lines) + "\n---\n" + draw(st.text(max_size=50))


def _check(fields: skills.Fields, folder: str) -> None:
    if fields.problem is None:
        assert 1 <= len(folder) <= skills.NAME_MAX and "--" not in folder
        assert folder.strip("-") == folder and all(
            c.islower() or c.isdigit() or c == "-" for c in folder
        )
        assert 0 < len(fields.description) <= skills.DESCRIPTION_MAX
        assert len(fields.compatibility) <= skills.COMPATIBILITY_MAX
        assert all(isinstance(v, str) for _, v in fields.metadata)
    else:
        assert fields.problem and isinstance(fields.problem, str)


@settings(max_examples=examples(300), deadline=None)
@given(head=heads(), folder=NAMES)
@example(head="---\nname: pdf\ndescription: ok\n---\n", folder="pdf")
@example(head="---\nname: pdf\ndescription: !!binary aGk=\n---\n", folder="pdf")
@example(head="---\n---\n", folder="pdf")
def test_validator_never_raises_and_valid_means_valid(head: str, folder: str) -> None:
    _check(skills.inspect_text(head, folder), folder)
    _check(skills.inspect_text(head.encode("utf-8", "surrogatepass"), folder), folder)


@settings(max_examples=examples(300), deadline=None)
@given(raw=st.binary(max_size=skills.HEAD_MAX_BYTES + 64))
@example(raw=b"---\n" + b"a: b\n" * 5000)
@example(raw=b"\xef\xbb\xbf---\nname: pdf\ndescription: x\n---\n")
def test_any_bytes_are_a_skill_or_a_reason(raw: bytes) -> None:
    _check(skills.inspect_text(b"---\n" + raw, "pdf"), "pdf")
    _check(skills.inspect_text(raw, "pdf"), "pdf")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A skill folder with a reference, a file beside it and a symlink leading out."""
    out = tmp_path_factory.mktemp("skills") / "pdf"
    (out / "references").mkdir(parents=True)
    (out / "references" / "a.md").write_text("a")
    (out.parent / "secret.md").write_text("outside")
    (out / "references" / "up").symlink_to(out.parent)
    return out


PATHS = st.one_of(
    st.lists(
        st.sampled_from(["..", ".", "references", "a.md", "up", "secret.md", "", "~", "/", "\x00"]),
        max_size=5,
    ).map("/".join),
    st.text(max_size=40),
)


@settings(max_examples=examples(400), deadline=None)
@given(path=PATHS)
@example(path="references/up/secret.md")
@example(path="/etc/passwd")
def test_skill_paths_never_leave_the_folder(folder: Path, path: str) -> None:
    try:
        target = skills.inside(folder, path)
    except ToolError:
        return
    assert target.is_relative_to(folder.resolve())


@settings(max_examples=examples(200), deadline=None)
@given(
    descriptions=st.lists(st.text(min_size=1, max_size=skills.DESCRIPTION_MAX), max_size=150),
    budget=st.integers(min_value=400, max_value=20000),
)
def test_catalogue_never_exceeds_its_budget(descriptions: list[str], budget: int) -> None:
    found = [
        skills.Skill(f"s{i}", "agent", Path(f"s{i}"), skills.Fields(" ".join(d.split()) or "x"))
        for i, d in enumerate(descriptions)
    ]
    text = skills.render_catalogue(found, budget)
    assert len(text) <= budget
    shown = text.count("\n- s")
    assert (shown == len(found)) or f"… and {len(found) - shown} more" in text
