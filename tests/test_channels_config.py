"""Channel configuration, secrets, pairing state and text splitting: the parts every adapter
shares, checked directly and through the CLI a person uses."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from anima import router
from anima.channels import access
from anima.channels.base import split_text, utf16_units
from anima.cli import main
from anima.credentials import secret
from anima.errors import BadConfig
from anima.home import Home
from anima.message import Message
from tests.conftest import add_channel, make_agent


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_secret_comes_from_env_or_a_private_credentials_file(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    path = home.root / "credentials.env"
    path.write_text("# bot tokens\nexport BOT_TOKEN='from-file'\n")
    path.chmod(0o644)
    with pytest.raises(BadConfig, match="chmod 600"):
        secret(home, "BOT_TOKEN", "the token")
    path.chmod(0o600)
    assert secret(home, "BOT_TOKEN", "the token") == "from-file"
    monkeypatch.setenv("BOT_TOKEN", "from-env")
    assert secret(home, "BOT_TOKEN", "the token") == "from-env"
    with pytest.raises(BadConfig, match="OTHER_TOKEN"):
        secret(home, "OTHER_TOKEN", "the other token")


def test_channel_config_errors_are_one_clear_line(home: Home) -> None:
    code, out = run("channel", "telegram")
    assert code == 1 and "no [channels.telegram] table" in out
    add_channel(home, "telegram", agent="arya", tokn_env="TYPO")
    code, out = run("channel", "telegram")
    assert code == 1 and "unknown key(s) tokn_env" in out and "Traceback" not in out


def test_webhook_refuses_to_start_without_authentication(home: Home) -> None:
    add_channel(home, "webhook", port=8799)
    code, out = run("channel", "webhook")
    assert code == 1 and "token_env or secret_env" in out


def test_telegram_refuses_an_unknown_agent(home: Home) -> None:
    add_channel(home, "telegram", agent="ghost", token_env="T")
    code, out = run("channel", "telegram", env={"T": "123:abc"})
    assert code == 1 and "no agent named 'ghost'" in out


def test_pairing_codes_expire_and_strangers_cannot_flood_requests(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = access.Access(home, "telegram", owner="1")
    assert gate.allowed("1") and not gate.allowed("2")
    monkeypatch.setenv("ANIMA_NOW", "2026-11-30T10:00:00Z")
    codes = [gate.request(str(u), f"user{u}") for u in range(10, 10 + access.MAX_PENDING + 2)]
    assert all(new for _, new in codes[: access.MAX_PENDING])
    assert codes[access.MAX_PENDING:] == [(None, False), (None, False)]
    assert gate.request("10", "user10") == (codes[0][0], False)  # asking again: same code, not resent
    monkeypatch.setenv("ANIMA_NOW", "2026-11-30T11:30:00Z")
    assert access.pending(home) == []
    code, out = run("pairing", "approve", "telegram", str(codes[0][0]))
    assert code == 1 and "no open pairing request" in out


def test_pairing_cli_approves_lists_and_revokes(home: Home) -> None:
    gate = access.Access(home, "discord")
    code, _ = gate.request("55", "Grace")
    out = run("pairing", "list")[1]
    assert "Grace" in out and str(code) in out
    assert run("pairing", "approve", "discord", str(code))[0] == 0
    assert gate.allowed("55")
    assert json.loads(run("pairing", "list", "--json")[1])["allowed"] == [["discord", "55", "Grace"]]
    assert run("pairing", "revoke", "discord", "55")[0] == 0
    assert not gate.allowed("55")


def test_channels_command_counts_waiting_and_dead_letters(home: Home) -> None:
    make_agent(home, "arya")
    add_channel(home, "telegram", agent="arya", token_env="T")
    router.route(home, [Message.create(sender="arya", to="telegram:1", body="hi", channel="telegram")])
    data = json.loads(run("channels", "--json")[1])
    assert data["telegram"] == {"configured": 1, "waiting": 1, "failed": 0, "sent": 0}


@pytest.mark.parametrize("limit", [20, 100, 4096])
def test_split_text_keeps_every_word_within_the_limit(limit: int) -> None:
    text = "\n\n".join(
        " ".join(f"w{p}.{i}" for i in range(p * 7 % 50 + 1)) + ("." if p % 2 else "") for p in range(60)
    ) + " " + "x" * (limit * 2)  # and one word longer than any piece
    parts = split_text(text, limit)
    assert all(0 < len(p) <= limit for p in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


def test_a_record_already_sent_or_dead_lettered_is_not_spooled_again(home: Home) -> None:
    from anima.spool import Spool

    spool = Spool(home, "telegram")
    sent = Message.create(sender="arya", to="telegram:1", body="once", channel="telegram")
    dead = Message.create(sender="arya", to="telegram:2", body="never", channel="telegram")
    (p1,) = router.route(home, [sent]).delivered
    (p2,) = router.route(home, [dead]).delivered
    spool.mark_sent(p1)
    spool.mark_failed(p2, "chat not found")
    # The runtime re-routes after a crash (routing is replayed from the git log): no resend.
    assert router.route(home, [sent, dead]).delivered == []
    assert spool.waiting() == []


def test_doctor_checks_each_configured_channel(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    make_agent(home, "arya")
    add_channel(home, "telegram", agent="arya", token_env="TG_TOKEN")
    add_channel(home, "webhook", token_env="HOOK_TOKEN")
    monkeypatch.setenv("HOOK_TOKEN", "x" * 32)
    spool = home.spool_dir / "webhook" / "failed"
    spool.mkdir(parents=True)
    (spool / "20261130T000000000Z-abcdef.md").write_text("---\nid: x\n---\nx\n")
    checks = {c["name"]: c for c in json.loads(run("doctor", "--json")[1])}
    assert not checks["channel telegram"]["ok"] and "TG_TOKEN" in checks["channel telegram"]["detail"]
    assert checks["channel webhook"]["level"] == "warn" and "1 dead-lettered" in checks["channel webhook"]["detail"]
    monkeypatch.setenv("TG_TOKEN", "123:abc")
    checks = {c["name"]: c for c in json.loads(run("doctor", "--json")[1])}
    assert checks["channel telegram"]["ok"]


def test_split_text_counts_telegram_length_in_utf16_units() -> None:
    text = ("🙂 " * 3000).strip()  # 5,999 characters, 8,999 UTF-16 units
    parts = split_text(text, 4096, utf16_units)
    assert all(utf16_units(p) <= 4096 for p in parts) and len(parts) == 3
    assert " ".join(parts) == text


def test_old_sent_shards_are_pruned_and_recent_ones_kept(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    from anima.spool import Spool, prune

    monkeypatch.setenv("ANIMA_NOW", "2026-11-30T10:00:00Z")
    spool = Spool(home, "webhook")
    for month in ("2026-07", "2026-08", "2026-11"):
        (spool.sent / month).mkdir(parents=True)
        (spool.sent / month / "x.md").write_text("x")
    assert prune(spool.sent, 3) == ["2026-07"]
    assert sorted(p.name for p in spool.sent.iterdir()) == ["2026-08", "2026-11"]
