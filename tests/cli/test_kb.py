"""``chatd kb load FILE``: the loader and its exit statuses."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

import pytest
import trio

from chatd.cli.kb import load_kb_file, run_kb_eval, run_kb_load
from chatd.config import KBSettings, Settings
from chatd.stores.kb import open_knowledge_base

FAQ = (
    '{"question": "Do you sell telescopes?", "answer": "Yes, three models.", "tags": ["sky"]}\n'
    '{"question": "Is the observatory open at night?", "answer": "Until 2 am."}\n'
)


def settings_for(tmp_path: Path, backend: Literal["sqlite", "arango"] = "sqlite") -> Settings:
    return Settings(kb=KBSettings(backend=backend, path=str(tmp_path / "kb.sqlite3")))


@pytest.fixture
def faq_file(tmp_path: Path) -> Path:
    path = tmp_path / "faq.jsonl"
    path.write_text(FAQ, encoding="utf-8")
    return path


async def test_load_kb_file_adds_entries_once(tmp_path: Path, faq_file: Path) -> None:
    """Loading counts the new entries; loading again adds none; no sample FAQ is mixed in."""
    settings = settings_for(tmp_path)
    with trio.fail_after(20):
        assert await load_kb_file(settings, str(faq_file)) == 2
        assert await load_kb_file(settings, str(faq_file)) == 0
        async with open_knowledge_base(settings.kb) as kb:
            assert await kb.count() == 2
            passages = await kb.search("do you sell telescopes")
    assert passages[0].answer == "Yes, three models."


def test_run_kb_load_reports_what_it_loaded(
    tmp_path: Path, faq_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 0 and "loaded N entries into <path>" on stdout."""
    settings = settings_for(tmp_path)
    assert run_kb_load(settings, str(faq_file)) == 0
    out, err = capsys.readouterr()
    assert out == f"loaded 2 entries into {settings.kb.path}\n"
    assert err == ""


def test_run_kb_load_bad_row_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad row: exit 2, "chatd: FILE:LINE: problem" on stderr, nothing written."""
    bad = tmp_path / "faq.csv"
    bad.write_text("question,answer\nQ?,A.\n,no question\n", encoding="utf-8")
    settings = settings_for(tmp_path)
    assert run_kb_load(settings, str(bad)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"chatd: {bad}:3: 'question' must be a non-empty string\n"
    assert not Path(settings.kb.path).exists()


def test_run_kb_load_arango_without_url_exits_2(
    tmp_path: Path, faq_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """kb.backend = 'arango' without kb.arango_url is refused with one line naming the key."""
    settings = settings_for(tmp_path, backend="arango")
    assert run_kb_load(settings, str(faq_file)) == 2
    assert capsys.readouterr().err.startswith("chatd: kb.arango_url = None: expected an http")


def test_run_kb_load_unreachable_arango_exits_2(
    faq_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ArangoDB that refuses connections: exit 2, one line naming kb.arango_url."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(kb=KBSettings(backend="arango", arango_url=url, timeout_s=2.0))
    assert run_kb_load(settings, str(faq_file)) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"chatd: kb.arango_url = '{url}': cannot open (cannot reach ArangoDB: ")
    assert err.count("\n") == 1


def test_run_kb_eval_prints_each_halfs_rates(
    tmp_path: Path, faq_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A labelled set of the operator's own: each half's hit, wrong, miss and
    off-topic-answered rates, and the cases asked for with --show."""
    assert run_kb_load(settings_for(tmp_path), str(faq_file)) == 0
    cases = tmp_path / "eval.jsonl"
    cases.write_text(
        '{"text": "any telescopes for sale?", "question": "Do you sell telescopes?",'
        ' "split": "tune"}\n'
        '{"text": "is the observatory open late?",'
        ' "question": "Is the observatory open at night?", "split": "test"}\n'
        '{"text": "what is the capital of peru", "question": null, "split": "test"}\n',
        encoding="utf-8",
    )
    capsys.readouterr()
    assert run_kb_eval(settings_for(tmp_path), str(cases), gate=0.0, show="all") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        "gate 0.00",
        "half   phrasings     hit   wrong    miss off-topic  answered",
    ]
    assert "tune           1  100.0%    0.0%    0.0%         0      0.0%" in out
    assert "'any telescopes for sale?' -> 'Do you sell telescopes?'" in out
    assert run_kb_eval(settings_for(tmp_path), str(cases), half="tune") == 0
    assert "test" not in capsys.readouterr().out


def test_run_kb_eval_refuses_a_bad_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not a labelled case: exit 2 naming the file and line."""
    cases = tmp_path / "eval.jsonl"
    cases.write_text('{"text": "hi", "question": null, "split": "both"}\n', encoding="utf-8")
    assert run_kb_eval(settings_for(tmp_path), str(cases)) == 2
    assert f"{cases}:1: 'split' must be one of tune, test" in capsys.readouterr().err
