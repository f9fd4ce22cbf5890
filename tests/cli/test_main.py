"""The ``chatd`` command as a user runs it: real processes, real sockets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

CHATD = [sys.executable, "-m", "chatd"]


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CHATD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def first_line(proc: subprocess.Popen[bytes]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read().decode() if proc.stderr else "no output"
    result: dict[str, object] = orjson.loads(line)
    return result


@pytest.fixture
def server() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    proc = start("serve", "--port", "0")
    try:
        line = first_line(proc)
        yield proc, str(line["url"])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()


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
    line = orjson.loads(proc.stdout.readline())
    assert line["event"] == "simulated LLM started in-process"
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
