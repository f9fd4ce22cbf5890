"""The answer cache follows the knowledge base: after ``chatd kb load`` (from
another process), the same question gets the new answer, not the cached one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import trio

from chatd.config import JanitorSettings
from chatd.testing import open_chat_client, open_chatd, wait_until
from tests.e2e.conftest import MakeSettings

QUESTION = "How do I reset my password?"
NEW_ANSWER = "Ask the shop's robot at the front desk for a new password."


async def test_after_kb_load_the_same_question_gets_the_new_answer(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(janitor=JanitorSettings(interval_s=0.1))
    async with open_chatd(settings) as server, open_chat_client(server.ws_url) as client:
        for request_id in ("a", "b"):
            await client.chat(request_id, QUESTION)
            assert (await client.finish(request_id))["type"] == "done"
        assert "Forgot password" in client.answer("b")
        assert client.events["b"][-1]["cached"] is True
        before = server.pipeline.kb_version.value
        faq = tmp_path / "faq.jsonl"
        faq.write_bytes(orjson.dumps({"question": QUESTION, "answer": NEW_ANSWER}) + b"\n")
        await trio.run_process(
            [sys.executable, "-m", "chatd", "kb", "load", str(faq)],
            env={**os.environ, "CHATD_KB_PATH": settings.kb.path},
            capture_stdout=True,
        )
        await wait_until(lambda: server.pipeline.kb_version.value != before, within=10)
        await client.chat("c", QUESTION)
        done = await client.finish("c")
        assert done["type"] == "done" and done["cached"] is False
        assert client.answer("c") == NEW_ANSWER
