"""The web chat at ``/``, in a real browser: Playwright driving Debian's
headless Chromium against a live chatd and its simulator.

Playwright's sync API blocks, so each test's browser steps run in a worker
thread while chatd serves on the trio loop.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import trio

from chatd.config import LimitsSettings, SimSettings
from chatd.testing import open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (nox installs it with apt-get; Playwright's own "
    "browser download is not reachable here)",
)

FAQ = "How do I reset my password?"
TIMEOUT_MS = 15_000


@contextmanager
def browser_page() -> Iterator[Any]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()


async def in_browser(steps: Callable[[], None]) -> None:
    await trio.to_thread.run_sync(steps)


def connected(page: Any, url: str) -> None:
    page.goto(url)
    expect(page.get_by_role("status")).to_have_text("Connected")


def ask(page: Any, text: str) -> Any:
    """Type ``text``, press Enter; the answer's list item."""
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")
    return page.locator("#log li.assistant").last


async def test_the_page_is_served_with_its_files(make_settings: MakeSettings) -> None:
    async with (
        open_chatd(make_settings()) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        script = await http.get("/web/chat.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await http.get("/web/chat.css")).status_code == 200
        assert (await http.get("/web/../app.py")).status_code == 404
        assert (await http.get("/web/secrets.txt")).status_code == 404


async def test_a_faq_answer_streams_in_with_its_path(make_settings: MakeSettings) -> None:
    async with open_chatd(make_settings()) as server:

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                answer = ask(page, FAQ)
                expect(answer.locator(".text")).to_contain_text("Forgot password")
                expect(answer.locator(".note")).to_have_text("Answered from the help center")
                expect(page.get_by_role("button", name="Send")).to_be_enabled()
                expect(page.get_by_role("button", name="Stop")).to_be_disabled()
                assert page.get_by_label("Your message").evaluate(
                    "el => el === document.activeElement"
                )

        await in_browser(steps)


async def test_stop_mid_answer_stops_it_and_the_upstream_stream(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(sim=SimSettings(ttft_ms=10, tokens_per_s=8))
    async with open_chatd(settings) as server:
        assert server.sim is not None

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                answer = ask(page, "tell me something about the weather in spring")
                text = answer.locator(".text")
                expect(text).not_to_have_text("")  # streaming: some of it is here
                stop = page.get_by_role("button", name="Stop")
                expect(stop).to_be_enabled()
                stop.click()
                expect(answer.locator(".note")).to_have_text("Stopped.")
                shown = text.text_content()
                page.wait_for_timeout(600)  # five tokens' time: nothing more arrives
                assert text.text_content() == shown
                expect(stop).to_be_disabled()

        await in_browser(steps)
        await wait_until(lambda: server.sim is not None and server.sim.stats.active == 0, within=5)
        assert server.sim.stats.client_disconnects == 1


async def test_escape_stops_too(make_settings: MakeSettings) -> None:
    settings = make_settings(sim=SimSettings(ttft_ms=10, tokens_per_s=8))
    async with open_chatd(settings) as server:

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                answer = ask(page, "tell me something about the weather in spring")
                expect(answer.locator(".text")).not_to_have_text("")
                page.keyboard.press("Escape")
                expect(answer.locator(".note")).to_have_text("Stopped.")

        await in_browser(steps)


async def test_a_reload_keeps_the_conversation(make_settings: MakeSettings) -> None:
    """After a reload the page shows the conversation, and the server's
    session goes on: the next question reaches the LLM with the history."""
    async with open_chatd(make_settings()) as server:
        assert server.sim is not None

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                answer = ask(page, FAQ)
                expect(answer.locator(".note")).to_have_text("Answered from the help center")
                page.reload()
                expect(page.get_by_role("status")).to_have_text("Connected")
                log = page.locator("#log li")
                expect(log).to_have_count(2)
                expect(log.first).to_have_text(FAQ)
                expect(log.last.locator(".text")).to_contain_text("Forgot password")
                answer = ask(page, "what is 12*7?")
                expect(answer.locator(".note")).to_have_text("Answered with the help of tools")

        await in_browser(steps)
        sent = [m.get("content") for m in server.sim.last_request.body["messages"]]
        assert FAQ in sent


async def test_a_busy_server_says_so(make_settings: MakeSettings) -> None:
    """With the one LLM slot taken and no queue, the page says the server is
    busy and when to try again; the send button comes back."""
    settings = make_settings(
        sim=SimSettings(ttft_ms=10, tokens_per_s=5),
        limits=LimitsSettings(llm_streams=1, max_queue=0),
    )
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as other:
        await other.chat("hold", "tell me something long")
        await other.wait_for("hold", "token")

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                answer = ask(page, "tell me another thing")
                note = answer.locator(".note")
                expect(note).to_contain_text("The server is busy right now. Try again in")
                expect(page.get_by_role("button", name="Send")).to_be_enabled()

        await in_browser(steps)
        await other.ws.aclose()


async def test_reconnects_on_its_own_after_the_connection_fails(
    make_settings: MakeSettings,
) -> None:
    async with open_chatd(make_settings()) as server:

        def steps() -> None:
            with browser_page() as page:
                attempts = 0

                def route(ws: Any) -> None:
                    nonlocal attempts
                    attempts += 1
                    if attempts == 1:
                        ws.close(code=1011, reason="gone")  # the server "fell over"
                    else:
                        ws.connect_to_server()

                page.route_web_socket("**/v1/ws", route)
                page.goto(server.url)
                expect(page.get_by_role("status")).to_contain_text("Reconnecting in")
                expect(page.get_by_role("status")).to_have_text("Connected")
                answer = ask(page, FAQ)
                expect(answer.locator(".text")).to_contain_text("Forgot password")
                assert attempts == 2

        await in_browser(steps)


async def test_a_draining_server_says_it_is_restarting(make_settings: MakeSettings) -> None:
    async with open_chatd(make_settings()) as server:
        page_ready = trio.Event()
        drained = trio.Event()
        token = trio.lowlevel.current_trio_token()

        def steps() -> None:
            with browser_page() as page:
                connected(page, server.url)
                trio.from_thread.run_sync(page_ready.set, trio_token=token)
                trio.from_thread.run(drained.wait, trio_token=token)
                expect(page.get_by_role("status")).to_contain_text("The server is restarting")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_browser, steps)
            await page_ready.wait()
            server.running.state.start_drain()
            drained.set()
