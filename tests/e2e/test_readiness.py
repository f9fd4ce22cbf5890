"""Readiness that means ready: /readyz asks the LLM and the stores; a
configured LLM URL is checked at start-up, and lends its model."""

from __future__ import annotations

import attrs
import httpx
import structlog

from chatd.config import LLMSettings
from chatd.testing import open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

DOWN = "http://127.0.0.1:9/v1"


async def test_ready_when_the_llm_and_the_knowledge_base_answer(
    make_settings: MakeSettings,
) -> None:
    async with (
        open_chatd(make_settings()) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        dependencies = ready.json()["dependencies"]
        assert dependencies["llm"]["answers"] is True and dependencies["kb"]["answers"] is True


async def test_an_llm_that_does_not_answer_is_not_ready_at_once(
    make_settings: MakeSettings,
) -> None:
    """Before any chat has failed (the breaker still closed), /readyz says the
    LLM is down, and why."""
    settings = make_settings(llm=LLMSettings(url=DOWN))
    async with open_chatd(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "llm unavailable"
    llm = ready.json()["dependencies"]["llm"]
    assert llm["breaker"] == "closed" and llm["answers"] is False
    assert "cannot reach the LLM" in llm["error"]


async def test_the_model_comes_from_the_llm_and_a_url_without_v1_is_flagged(
    make_settings: MakeSettings,
) -> None:
    """A chatd in front of another (whose /v1/models lists 'chatd') takes that
    model when llm.model is left at its default; a URL without /v1 is warned."""
    async with open_chatd(make_settings()) as upstream:
        front = attrs.evolve(make_settings(), llm=LLMSettings(url=upstream.url + "/v1"))
        async with open_chatd(front) as server:
            await wait_until(lambda: server.pipeline.llm.model == "chatd", within=5)
        with structlog.testing.capture_logs() as logs:
            bare = attrs.evolve(make_settings(), llm=LLMSettings(url=upstream.url))
            async with open_chatd(bare) as server:
                await wait_until(
                    lambda: any("does not answer" in str(line["event"]) for line in logs),
                    within=5,
                )
    events = [str(line["event"]) for line in logs if line["log_level"] == "warning"]
    assert any("does not end in /v1" in event and "/v1" in event for event in events)
