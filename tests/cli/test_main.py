"""The ``chatd`` command as a user runs it: real processes, real sockets."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

CHATD = [sys.executable, "-m", "chatd"]


@contextlib.contextmanager
def running(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``chatd *args`` while the block runs; killed if still running, and its pipes closed."""
    proc = subprocess.Popen(
        [*CHATD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


def first_line(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read().decode() if proc.stderr else "no output"
    result: dict[str, object] = orjson.loads(line)
    return result


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``chatd serve`` as a new user starts it: a fresh folder, no knowledge base yet."""
    with running("serve", "--port", "0", cwd=tmp_path) as proc:
        yield proc, str(first_line(proc)["url"])


def test_serve_first_line_names_address_and_drains_on_sigterm(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """``chatd serve --port 0``: the first log line names the address; SIGTERM exits 0."""
    proc, url = server
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["dependencies"]["llm"]["simulated"] is True
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0


def test_serve_starts_the_simulator_in_process(
    server: tuple[subprocess.Popen[bytes], str],
) -> None:
    """With no LLM URL, serve logs the simulator it started, and it answers."""
    proc, _url = server
    assert proc.stdout is not None
    lines = [orjson.loads(proc.stdout.readline()) for _ in range(2)]
    assert [x["event"] for x in lines] == [
        "loaded the sample FAQ into an empty knowledge base",
        "simulated LLM started in-process",
    ]
    line = lines[1]
    models = httpx.get(f"{line['llm_url']}/models", timeout=5)
    assert models.status_code == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"CHATD_LIMITS_LLM_STREAMS": "many"}, "limits.llm_streams = 'many'"),
        (("--port", "99999"), {}, "server.port = 99999 (from the command line)"),
        (("--llm-url", "localhost:9"), {}, "llm.url = 'localhost:9'"),
    ],
)
def test_bad_config_stops_with_one_line(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    """A bad value exits 2 with one line on stderr naming key and value."""
    result = subprocess.run(
        [*CHATD, "serve", *args],
        capture_output=True,
        env={**os.environ, **env},
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    assert result.stdout == b""


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    """A port already taken stops start-up with one line, exit 2."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CHATD, "serve", "--port", str(port)], capture_output=True, timeout=30, cwd=tmp_path
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.decode()
    assert len(result.stderr.decode().strip().splitlines()) == 1


def test_bad_rules_file_stops_sim_llm(tmp_path: Path) -> None:
    """``chatd sim-llm`` with a broken rules file exits 2 naming the file."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[[rules]]\npattern = '('\nreply = 'x'\n")
    result = subprocess.run(
        [*CHATD, "sim-llm", "--port", "0", "--rules", str(rules)],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "rules.toml" in result.stderr.decode()


def test_drain_waits_for_answers_and_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    """SIGTERM with an answer streaming: chatd waits for it; a second SIGTERM exits now."""
    with running("serve", "--port", "0", cwd=tmp_path, env={"CHATD_SIM_TOKENS_PER_S": "2"}) as proc:
        url = str(first_line(proc)["url"])
        streaming = threading.Event()

        def ask() -> None:
            body = {"message": "tell me a long story about the sea"}
            headers = {"Accept": "text/event-stream"}
            with (
                contextlib.suppress(httpx.HTTPError),
                httpx.stream(
                    "POST", f"{url}/v1/chat", json=body, headers=headers, timeout=30
                ) as response,
            ):
                for line in response.iter_lines():
                    if line == "event: token":
                        streaming.set()

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        assert streaming.wait(15)
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(1.0)  # draining: the answer is still streaming
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(5)
        assert time.monotonic() - started < 3
        asker.join(5)
