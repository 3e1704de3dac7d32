"""`anima web` in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; nothing downloads a browser), against a live `anima web` and a live `anima run` on the
fake model: the overview refreshes itself, a message sent from the page streams its reply in,
a turn opens its diff, a pairing request and a proposal are approved, charts render, and all of
it works from the keyboard alone. With ANIMA_SCREENSHOTS=1 it also refreshes docs/screenshots/*.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from anima.agent import Agent
from anima.channels import access
from anima.home import Home
from anima.testing import FakeModelServer, Reply
from tests.conftest import LiveRuntime, make_agent, send, wait_for
from tests.test_web import WebServer, run_once

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1200,800",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def arya(home: Home) -> Agent:
    return make_agent(home)


@pytest.fixture(autouse=True)
def fresh_log(browser: WebDriver) -> None:
    """Each test sees only its own console errors."""
    browser.get("about:blank")
    problems(browser)


@pytest.fixture
def web(home: Home, arya: Agent, browser: WebDriver) -> Iterator[WebServer]:
    with WebServer(home) as server:
        yield server
        browser.get("about:blank")  # close the page's event streams before the server goes


def text_of(browser: WebDriver, element_id: str) -> str:
    """The text of #element_id now; "" while the page is being replaced (a form's reload
    makes an element found a moment ago stale)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(browser.find_element(By.ID, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def problems(browser: WebDriver) -> list[str]:
    """Console errors since the last call: a script the CSP blocked, a failed request."""
    return [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def active(browser: WebDriver) -> str:
    el = browser.switch_to.active_element
    return f"{el.tag_name}:{el.get_attribute('id') or el.text}"


def test_send_from_the_page_and_watch_the_reply_stream_in(
    browser: WebDriver, web: WebServer, home: Home, fake: FakeModelServer
) -> None:
    text = "alpha beta gamma delta epsilon zeta eta theta"
    fake.add(Reply(text, chunk=4, delay_per_chunk=0.15))
    with LiveRuntime(home):
        browser.get(web.url + "agents/arya/chat")
        problems(browser)
        box = browser.find_element(By.ID, "body")
        box.send_keys("Tell me <b>everything</b>")
        box.find_element(By.XPATH, "ancestor::form//button").click()
        # the reply grows word by word in the streaming bubble, before the turn is committed
        partial = wait_for(
            lambda: next(
                (
                    t
                    for e in browser.find_elements(By.CSS_SELECTOR, "#streaming .text")
                    if (t := e.text) and t != text
                ),
                None,
            ),
            what="a partial streamed reply",
        )
        assert text.startswith(str(partial))
        wait_for(
            lambda: text in text_of(browser, "chat"),
            what="the committed reply in the chat",
        )
        wait_for(
            lambda: not browser.find_elements(By.CSS_SELECTOR, "#streaming .bubble"),
            what="stream bubble gone",
        )
        chat = text_of(browser, "chat")
        assert "Tell me <b>everything</b>" in chat  # shown as text, not markup
        assert "waiting for a reply" not in chat
    assert not problems(browser)


def test_overview_refreshes_itself_and_opens_the_turn_diff(
    browser: WebDriver, web: WebServer, home: Home, arya: Agent
) -> None:
    browser.get(web.url)
    assert "no turns yet" in text_of(browser, "live")
    browser.execute_script("window.stayed = true")
    with LiveRuntime(home):
        send(arya, "Remember that the meeting is on Friday.")
        wait_for(
            lambda: "turn(arya)" in text_of(browser, "live"),
            what="the overview to show the turn",
        )
    assert browser.execute_script("return window.stayed") is True  # updated in place, not reloaded
    browser.find_element(By.PARTIAL_LINK_TEXT, "turn(arya)").click()
    wait_for(lambda: "commit" in browser.title, what="the commit page")
    assert "Anima-Trigger" in browser.find_element(By.CSS_SELECTOR, "pre.commit").text
    outbox = browser.find_element(By.XPATH, "//summary[contains(., 'b/outbox/')]")
    outbox.click()  # files are folded; a click (or Enter) unfolds one
    diff = outbox.find_element(By.XPATH, "following-sibling::pre").text
    assert "+++ b/outbox/" in diff and "+from: arya" in diff
    assert not problems(browser)


def test_timeline_opens_a_commit_and_charts_render(
    browser: WebDriver, home: Home, arya: Agent
) -> None:
    for i in range(3):
        send(arya, f"note {i}", conversation=f"t{i}")
    run_once(home)
    with WebServer(home) as server:
        browser.get(server.url + "timeline?agent=arya")
        links = browser.find_elements(By.CSS_SELECTOR, "table.timeline a")
        assert len(links) == 3
        links[0].click()
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "pre.diff"), what="the diff")
        browser.get(server.url + "agents/arya/stats")
        charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
        assert len(charts) == 3 and all(c.size["height"] > 50 for c in charts)
        bars = [
            b for b in browser.find_elements(By.CSS_SELECTOR, "rect.bar") if b.size["height"] > 1
        ]
        assert bars  # drawn, not only present in the markup
        browser.get(server.url + "charts")
        assert [
            b for b in browser.find_elements(By.CSS_SELECTOR, "rect.bar") if b.size["height"] > 1
        ]
    assert not problems(browser)


def test_a_pairing_request_is_approved_with_a_click(
    browser: WebDriver, web: WebServer, home: Home
) -> None:
    code, _ = access.Access(home, "telegram").request("tg:7", "Ann")
    browser.get(web.url + "approvals")
    browser.find_element(By.XPATH, "//button[normalize-space()='Approve Ann']").click()
    wait_for(lambda: "No open requests" in browser.page_source, what="the request to go")
    assert access.Access(home, "telegram").allowed("tg:7")
    assert code not in browser.find_element(By.TAG_NAME, "main").text


def test_a_proposal_is_approved_with_a_click(
    browser: WebDriver, web: WebServer, home: Home, arya: Agent
) -> None:
    from anima import gitstore, proposals

    gitstore.commit_external(arya.path)
    p = proposals.create(arya, "long answers tire the owner", files={"always.md": "Be brief.\n"})
    browser.get(web.url + "approvals")
    row = browser.find_element(By.XPATH, f"//table[@class='proposals']//tr[contains(., '{p.id}')]")
    assert "long answers tire the owner" in row.text and "passed" in row.text
    row.find_element(By.XPATH, f".//button[normalize-space()='Approve {p.id}']").click()
    wait_for(
        lambda: "No proposals." in text_of(browser, "main"),
        what="the proposal to leave the open list",
    )
    assert gitstore.log(arya.path, limit=1)[0].subject.startswith(f"proposal(arya): apply {p.id}")
    assert arya.read("always.md") == "Be brief.\n"
    browser.get(web.url + f"agents/arya/proposals/{p.id}")
    browser.find_element(By.CSS_SELECTOR, "p.ok a").click()  # "Applied as <commit>"
    wait_for(lambda: "commit" in browser.title, what="the applied commit")
    changed = browser.find_element(By.XPATH, "//summary[contains(., 'b/always.md')]")
    changed.click()
    assert "+Be brief." in changed.find_element(By.XPATH, "following-sibling::pre").text
    assert not problems(browser)


def test_keyboard_alone_reaches_every_part(browser: WebDriver, web: WebServer, arya: Agent) -> None:
    browser.get(web.url)
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    assert active(browser) == "a:Skip to content"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: active(browser).startswith("main:main"), what="focus in main")
    outline = browser.execute_script(
        "const a = document.querySelector('header a'); a.focus(); return getComputedStyle(a).outlineStyle"
    )
    assert outline != "none"  # focus is visible
    # from the top of the page, Tab reaches the agent's link; Enter follows it
    for _ in range(20):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if active(browser) == "a:arya":
            break
    assert active(browser) == "a:arya"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: "/agents/arya/chat" in browser.current_url, what="the chat page")
    for _ in range(30):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if active(browser) == "textarea:body":
            break
    assert active(browser) == "textarea:body"
    browser.switch_to.active_element.send_keys("typed without a mouse")
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert active(browser) == "button:Send"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(lambda: any(arya.inbox.glob("*.md")), what="the message in the inbox")
    wait_for(
        lambda: "typed without a mouse" in text_of(browser, "chat"),
        what="pending shown",
    )


@pytest.mark.skipif(
    not os.environ.get("ANIMA_SCREENSHOTS"),
    reason="set ANIMA_SCREENSHOTS=1 to refresh docs/screenshots",
)
def test_screenshots_of_the_main_pages(
    browser: WebDriver, home: Home, arya: Agent, fake: FakeModelServer
) -> None:
    edit = {
        "command": "insert",
        "path": "MEMORY.md",
        "insert_text": "- takes tea without sugar",
        "reason": "the user told me how they take their tea",
    }
    fake.add(Reply("", tool_calls=[{"name": "memory", "input": edit}]), Reply("Noted: no sugar."))
    people = arya.memory_dir / "people"
    people.mkdir(exist_ok=True)
    (people / "ann.md").write_text(
        "---\ndescription: Ann, the user's sister; visits on Fridays\n---\n"
    )
    send(arya, "Remember that I take my tea without sugar.")
    for i in range(12):
        send(arya, f"What is on for day {i}?", conversation=f"plans{i % 3}")
    run_once(home)
    access.Access(home, "telegram").request("tg:1001", "Ann Example")
    from tests.test_web import _dead_letter

    _dead_letter(home, "Your reminder: call the plumber", "Forbidden: bot was blocked by the user")
    from anima import gitstore, proposals

    gitstore.commit_external(arya.path)
    brief = proposals.create(
        arya,
        "the owner said my answers run long; a skill and a rule keep them short",
        summary="shorter answers",
        files={
            "always.md": "Answer in three sentences or fewer unless asked for more.\n",
            "skills/brief/SKILL.md": "---\nname: brief\ndescription: Keep answers short.\n---\n"
            "Lead with the answer; leave out what was not asked.\n",
        },
    )
    proposals.create(arya, "check in twice as often", config={"heartbeat.every": 2})
    SHOTS.mkdir(parents=True, exist_ok=True)
    with WebServer(home) as server:
        for name, path in (
            ("overview", ""),
            ("conversation", "agents/arya/chat?c=cli"),
            ("timeline", "timeline?agent=arya"),
            ("charts", "agents/arya/stats"),
            ("charts-agents", "charts"),
            ("memory", "agents/arya/memory?q=tea"),
            ("approvals", "approvals"),
            ("proposal", f"agents/arya/proposals/{brief.id}"),
        ):
            browser.get(server.url + path)
            browser.save_screenshot(str(SHOTS / f"{name}.png"))
        browser.get(server.url + "timeline?agent=arya")
        browser.find_elements(By.CSS_SELECTOR, "table.timeline a")[-1].click()
        browser.save_screenshot(str(SHOTS / "commit.png"))
