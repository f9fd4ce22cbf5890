"""``chatd chat`` against a real chatd: lines typed in, what the user sees out."""

from __future__ import annotations

import codecs
import gc
import io
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio

from chatd.cli.chat import Printer, converse
from chatd.config import KBSettings, LimitsSettings, ServerSettings, Settings, SimSettings
from chatd.testing import Chatd, open_chat_client, open_chatd


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Fast simulator, knowledge base in a temporary file (as tests/e2e's make_settings)."""
    return Settings(
        sim=SimSettings(ttft_ms=10, tokens_per_s=1000),
        kb=KBSettings(path=str(tmp_path / "kb.sqlite3")),
    )


@pytest.fixture
async def chatd(settings: Settings) -> AsyncIterator[Chatd]:
    """A real chatd with its simulated LLM on loopback."""
    async with open_chatd(settings) as server:
        yield server


class Screen(io.StringIO):
    """A text stream that wakes whoever waits for some text to show on it."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def write(self, text: str) -> int:
        """Keep ``text`` and wake the waiters."""
        written = super().write(text)
        self._changed.set()
        self._changed = trio.Event()
        return written

    async def wait_for(self, text: str, after: str = "") -> None:
        """Until ``text`` shows (after the first ``after``, if given)."""
        with trio.fail_after(10):
            while text not in (self.getvalue().partition(after)[2] if after else self.getvalue()):
                await self._changed.wait()


@attrs.define
class Terminal:
    """A stand-in terminal: answers and notes on one screen, Ctrl-C as an event."""

    screen: Screen = attrs.field(factory=Screen)
    _keys: tuple[trio.MemorySendChannel[object], trio.MemoryReceiveChannel[object]] = attrs.field(
        factory=lambda: trio.open_memory_channel[object](0)
    )

    @property
    def output(self) -> str:
        """Everything shown so far."""
        return self.screen.getvalue()

    async def chat(self, url: str, lines: AsyncIterator[str], api_key: str | None = None) -> int:
        """Run the client to its end; its exit status."""
        printer = Printer(self.screen, self.screen)
        with trio.fail_after(15):
            return await converse(url, lines, printer, self._keys[1], session="t", api_key=api_key)

    async def ctrl_c(self) -> None:
        """Press Ctrl-C."""
        await self._keys[0].send(signal.SIGINT)


async def script(*lines: str, gate: trio.Event | None = None) -> AsyncIterator[str]:
    """The lines, as typed; with ``gate``, the ones after the first wait for it."""
    for index, line in enumerate(lines):
        if index and gate is not None:
            await gate.wait()
        yield line


async def keep_status(status: list[int], run: Callable[[], Awaitable[int]]) -> None:
    """Run the client in the background, keeping its exit status."""
    status.append(await run())


async def answer_of(chatd: Chatd, message: str) -> str:
    """The answer chatd gives ``message`` (the simulator is deterministic)."""
    async with open_chat_client(chatd.ws_url) as client:
        with trio.fail_after(10):
            await client.chat("x", message)
            await client.finish("x")
        return client.answer("x")


async def test_direct_answer_streams_then_summary(chatd: Chatd) -> None:
    """A direct answer is printed whole after its path, then a done summary."""
    expected = await answer_of(chatd, "hello there, nice to meet you")
    terminal = Terminal()
    assert await terminal.chat(chatd.ws_url, script("hello there, nice to meet you")) == 0
    assert terminal.output.startswith(f"  [connected to {chatd.ws_url}, session t]\n")
    assert f"  [path: direct]\n{expected}\n  [done: " in terminal.output
    assert "tokens, first token " in terminal.output and ", total " in terminal.output


async def test_tool_question_shows_tool_lines_and_path(chatd: Chatd) -> None:
    """Arithmetic shows the calculator's call and result, then ``path: tools``."""
    terminal = Terminal()
    assert await terminal.chat(chatd.ws_url, script("what is 2+3?")) == 0
    assert '  [tool calculator {"expression": "2+3"}]\n' in terminal.output
    assert "  [tool calculator ok " in terminal.output
    answer = terminal.output.partition("  [path: tools]\n")[2].partition("  [done: ")[0]
    assert "5" in answer


async def test_faq_question_takes_tool_stream(chatd: Chatd) -> None:
    """An FAQ match shows ``path: tool_stream`` and the FAQ's answer."""
    terminal = Terminal()
    assert await terminal.chat(chatd.ws_url, script("How do I reset my password?")) == 0
    assert "  [tool frequently_asked " in terminal.output
    answer = terminal.output.partition("  [path: tool_stream]\n")[2].partition("  [done: ")[0]
    assert "password" in answer.lower()


async def test_lines_share_one_session(chatd: Chatd) -> None:
    """Every line goes in one session, so the second turn's prompt holds the first."""
    terminal = Terminal()
    lines = script("hello there, I am Ada", "  ", "hello again")
    assert await terminal.chat(chatd.ws_url, lines) == 0
    assert terminal.output.count("  [done: ") == 2, "a blank line is not sent"
    assert chatd.sim is not None
    messages = chatd.sim.last_request.body["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]


async def test_ctrl_c_cancels_the_answer_not_the_program(chatd: Chatd) -> None:
    """Ctrl-C mid-answer prints ``[cancelled · REQUEST_ID]``; the next line is still answered."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=5)
    terminal, gate, status = Terminal(), trio.Event(), list[int]()
    lines = script("tell me a long story about the sea", "hello there", gate=gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(keep_status, status, partial(terminal.chat, chatd.ws_url, lines))
        await terminal.screen.wait_for(" ", after="  [path: direct]\n")  # a token or two
        await terminal.ctrl_c()
        await terminal.screen.wait_for("  [cancelled · req_")
        chatd.sim.set_timing(ttft_ms=10, tokens_per_s=1000)
        gate.set()
    assert status == [0]
    first, second = terminal.output.split("  [cancelled · req_")
    assert "[done" not in first
    assert second.count("  [path: direct]\n") == 1 and second.count("  [done: ") == 1


async def test_ctrl_c_at_the_prompt_quits_cleanly(chatd: Chatd) -> None:
    """Ctrl-C with no answer under way ends the program with status 0."""
    terminal, status = Terminal(), list[int]()
    async with trio.open_nursery() as nursery:
        lines = script("hello there", "never typed", gate=trio.Event())
        nursery.start_soon(keep_status, status, partial(terminal.chat, chatd.ws_url, lines))
        await terminal.screen.wait_for("  [done: ")
        await terminal.ctrl_c()
    assert status == [0]


async def test_end_of_input_exits_zero(chatd: Chatd) -> None:
    """No more lines (Ctrl-D, the end of a pipe) ends the program with status 0."""
    terminal = Terminal()
    assert await terminal.chat(chatd.ws_url, script()) == 0
    assert terminal.output == f"  [connected to {chatd.ws_url}, session t]\n"


async def test_connection_refused_is_one_line_and_status_1() -> None:
    """Nothing listening: one line naming the URL and the reason, status 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"ws://127.0.0.1:{port}/v1/ws"
    terminal = Terminal()
    assert await terminal.chat(url, script("hello")) == 1
    assert terminal.output == f"chatd chat: cannot connect to {url}: Connection refused\n"


# trio-websocket 0.12 leaves the socket of a cancelled handshake for the garbage
# collector (harmless in the CLI, which exits next); gc.collect() keeps it here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_silent_server_times_out_connecting(autojump_clock: trio.abc.Clock) -> None:
    """A server that takes the TCP connection but never answers: status 1 after 10 s."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, silent, 0)
        port = listeners[0].socket.getsockname()[1]
        url = f"ws://127.0.0.1:{port}/v1/ws"
        terminal = Terminal()
        start = trio.current_time()
        assert await terminal.chat(url, script("hello")) == 1
        assert trio.current_time() - start == pytest.approx(10)
        nursery.cancel_scope.cancel()
    gc.collect()
    assert terminal.output == f"chatd chat: cannot connect to {url}: no answer within 10 s\n"


async def silent(stream: trio.SocketStream) -> None:
    """Take a connection and say nothing."""
    async with stream:
        await trio.sleep_forever()


async def test_server_going_away_ends_with_status_1(settings: Settings) -> None:
    """When chatd goes away between answers, the client says so at once and exits 1."""
    terminal, status = Terminal(), list[int]()
    async with trio.open_nursery() as nursery, open_chatd(settings) as server:
        lines = script("hello there", "never typed", gate=trio.Event())
        nursery.start_soon(keep_status, status, partial(terminal.chat, server.ws_url, lines))
        await terminal.screen.wait_for("  [done: ")
    assert status == [1]
    last = terminal.output.splitlines()[-1]
    assert last.startswith(("chatd chat: lost the connection", "chatd chat: the server closed"))


async def test_api_key_is_sent(settings: Settings) -> None:
    """With api_keys configured, the right key is answered; a wrong one is
    refused at once, which the client says before it exits 1."""
    settings = attrs.evolve(settings, server=ServerSettings(api_keys=["sesame"]))
    async with open_chatd(settings) as server:
        refused, answered = Terminal(), Terminal()
        lines = script("hello", gate=trio.Event())  # it is refused before it asks
        assert await refused.chat(server.ws_url, lines, api_key="wrong") == 1
        await lines.aclose()
        assert await answered.chat(server.ws_url, script("hello"), api_key="sesame") == 0
    last = refused.output.splitlines()[-1]  # its error frame, or its close (1008), first
    assert last.startswith("chatd chat: the server ") and "missing or wrong API key" in last
    assert "  [done: " in answered.output


async def read_into(pipe: trio.abc.ReceiveStream | None, screen: Screen) -> None:
    """Copy a process's output onto ``screen`` as it comes."""
    assert pipe is not None
    decoder = codecs.getincrementaldecoder("utf-8")()
    async for chunk in pipe:
        screen.write(decoder.decode(chunk))


async def test_sigint_in_a_real_process(chatd: Chatd) -> None:
    """The program itself: SIGINT cancels the answer, the next line is answered, EOF exits 0."""
    assert chatd.sim is not None
    chatd.sim.set_timing(ttft_ms=10, tokens_per_s=5)
    command = [sys.executable, "-m", "chatd", "chat", "--url", chatd.ws_url]
    pipes = subprocess.PIPE
    stdout, stderr = Screen(), Screen()
    async with trio.open_nursery() as nursery:  # killed and reaped if the test fails
        process: trio.Process = await nursery.start(
            partial(trio.run_process, command, stdin=pipes, stdout=pipes, stderr=pipes, check=False)
        )
        assert process.stdin is not None
        nursery.start_soon(read_into, process.stdout, stdout)
        nursery.start_soon(read_into, process.stderr, stderr)
        await process.stdin.send_all(b"tell me a long story about the sea\n")
        await stderr.wait_for("  [path: direct]\n")
        await stdout.wait_for(" ")
        process.send_signal(signal.SIGINT)
        await stderr.wait_for("  [cancelled · req_")
        chatd.sim.set_timing(ttft_ms=10, tokens_per_s=1000)
        await process.stdin.send_all(b"what is 2+3?\n")
        await process.stdin.aclose()
        with trio.fail_after(10):
            assert await process.wait() == 0
    notes, answers = stderr.getvalue(), stdout.getvalue()
    assert "\x1b[" not in notes, "no ANSI codes when stderr is not a terminal"
    assert notes.count("  [done: ") == 1 and "  [tool calculator ok " in notes
    assert "[" not in answers, "notes stay off stdout"
    assert "5" in answers.splitlines()[-1]


async def test_each_answer_names_its_request_unless_asked_not_to(chatd: Chatd) -> None:
    terminal = Terminal()
    assert await terminal.chat(chatd.ws_url, script("what is 2+3?")) == 0
    done = next(line for line in terminal.output.splitlines() if "[done: " in line)
    assert re.search(r" · req_[0-9a-f]{16}\]$", done), done
    printer = Printer(io.StringIO(), quiet := io.StringIO())
    with trio.fail_after(15):
        status = await converse(
            chatd.ws_url,
            script("what is 2+3?"),
            printer,
            trio.open_memory_channel[object](0)[1],
            session="t",
            show_ids=False,
        )
    assert status == 0 and "req_" not in quiet.getvalue()


async def test_the_exit_status_says_whether_the_last_request_failed(settings: Settings) -> None:
    """A script can tell: 1 when the last answer was an error, 0 when it was not."""
    limited = attrs.evolve(settings, limits=LimitsSettings(rate_per_minute=1))
    async with open_chatd(limited) as server:
        terminal = Terminal()
        assert await terminal.chat(server.ws_url, script("hello", "hello again")) == 1
        assert "[error rate_limited: " in terminal.output and " · req_" in terminal.output
    async with open_chatd(settings) as server:
        assert await Terminal().chat(server.ws_url, script("what is 2+3?")) == 0
