"""``chatd``'s entry point: ``serve``, ``sim-llm``, ``kb load`` (and ``chat``)."""

from __future__ import annotations

import argparse
import functools
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType

import structlog
import trio

from chatd import __version__
from chatd.cli.chat import add_chat_arguments, run_chat
from chatd.cli.trace import add_trace_arguments, run_trace
from chatd.config import Settings, load_settings
from chatd.exceptions import ConfigError, ServerFailed, first_leaf
from chatd.observability import configure_logging
from chatd.redaction import key_hash, new_key

__all__ = ["main"]

log = structlog.get_logger("chatd.cli")


def _workers(value: str) -> int | str:
    """``--workers``: a positive number, or ``auto``."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count <= 0:
        raise argparse.ArgumentTypeError(
            f'expected a number greater than 0 or "auto", not {value!r}'
        )
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd", description="A chatbot backend on trio: tools, streaming answers."
    )
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the chat server")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    serve.add_argument("--config", help="a TOML configuration file")
    serve.add_argument("--llm-url", help="OpenAI-style base URL ending in /v1")
    serve.add_argument(
        "--workers",
        type=_workers,
        help='processes on the one socket: a number, or "auto" for one per core '
        "(default 1; they share state via Redis)",
    )

    sim = commands.add_parser("sim-llm", help="run the simulated LLM alone")
    sim.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    sim.add_argument("--port", type=int, default=8081, help="port (default 8081)")
    sim.add_argument("--config", help="a TOML configuration file")
    sim.add_argument("--ttft-ms", type=float, help="time to first token (default 300)")
    sim.add_argument("--tokens-per-s", type=float, help="tokens per second (default 40)")
    sim.add_argument("--rules", help="a TOML or JSON rules file replacing the default rules")
    chat = commands.add_parser("chat", help="a terminal chat client; Ctrl-C stops an answer")
    add_chat_arguments(chat)
    trace = commands.add_parser(
        "trace", help="draw a request's spans from a JSON log, or list the slowest and failed"
    )
    add_trace_arguments(trace)

    keys = commands.add_parser("keys", help="make API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_commands.add_parser(
        "new", help="print a new key (give it to the client) and its hash (for the config)"
    )

    kb = commands.add_parser("kb", help="manage the knowledge base")
    kb_commands = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    load = kb_commands.add_parser(
        "load", help="load FAQ entries (JSON Lines or CSV: question, answer, tags)"
    )
    load.add_argument("file", help="a .jsonl or .csv file")
    load.add_argument("--config", help="a TOML configuration file")
    evaluate = kb_commands.add_parser(
        "eval",
        help="how often the FAQ answers a labelled set of phrasings right, wrong or not at all",
    )
    evaluate.add_argument(
        "file", nargs="?", help="a labelled set (JSON Lines); default: the sample FAQ's own"
    )
    evaluate.add_argument("--config", help="a TOML configuration file")
    evaluate.add_argument(
        "--gate", type=float, help="the confidence Path B needs (default tools.faq_min_confidence)"
    )
    evaluate.add_argument(
        "--show",
        choices=("wrong", "miss", "answered", "all"),
        help="list the cases with this outcome",
    )
    evaluate.add_argument(
        "--half", choices=("tune", "test"), help="only this half (tune thresholds on 'tune')"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    if args.command == "serve":
        overrides = {
            "server.host": args.host,
            "server.port": args.port,
            "llm.url": args.llm_url,
            "server.workers": args.workers,
        }
    elif args.command == "kb":
        overrides = {}
    else:
        overrides = {
            "sim.host": args.host,
            "sim.port": args.port,
            "sim.ttft_ms": args.ttft_ms,
            "sim.tokens_per_s": args.tokens_per_s,
            "sim.rules": args.rules,
        }
    return load_settings(args.config, overrides=overrides)


async def _run_sim(settings: Settings) -> None:
    from chatd.llm.sim import serve_sim_llm

    async with trio.open_nursery() as nursery:
        sim = await nursery.start(serve_sim_llm, settings.sim)
        log.info(
            "simulated LLM listening",
            url=sim.base_url,
            ttft_ms=settings.sim.ttft_ms,
            tokens_per_s=settings.sim.tokens_per_s,
            rules=settings.sim.rules or "default",
        )


def _worker_command(args: argparse.Namespace) -> list[str]:
    """``chatd serve`` with this one's configuration, as one worker of several."""
    worker = [sys.executable, "-m", "chatd", "serve", "--workers", "1"]
    if args.config:
        worker += ["--config", args.config]
    if args.llm_url:
        worker += ["--llm-url", args.llm_url]
    return worker


def _end_cleanly_on_sigterm() -> None:
    """``serve``: SIGTERM does what Ctrl-C does until trio's signal receiver
    (serve's drain, or the workers' supervisor) takes it over, and again once
    that lets go: a KeyboardInterrupt, which main() turns into status 0
    (:func:`_serve` has trio raise it only at a checkpoint).

    Its default action would kill a server that is still starting (status
    -15), when there is nothing in flight to drain. A worker of
    ``--workers N`` starts with SIGTERM blocked (:mod:`chatd.server.workers`),
    so one that came while Python was starting arrives here, on unblocking.
    """
    # trio makes SIGINT a KeyboardInterrupt only over Python's own handler
    # (not over SIG_IGN, as a shell leaves for background jobs).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _as_sigint)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])


def _as_sigint(_signum: int, frame: FrameType | None) -> None:
    """Hand SIGTERM to whatever handles SIGINT now: Python's KeyboardInterrupt,
    or inside ``trio.run`` trio's, which raises it in the main task."""
    handler = signal.getsignal(signal.SIGINT)
    if not callable(handler):  # someone set SIG_IGN or SIG_DFL since
        raise KeyboardInterrupt
    handler(signal.SIGINT, frame)


def _serve(args: argparse.Namespace, settings: Settings) -> None:
    """``chatd serve``: one server, or the supervisor of several."""
    run: Callable[[], Awaitable[None]]
    if settings.server.worker_count > 1:
        from chatd.server.workers import supervise

        run = functools.partial(supervise, settings, _worker_command(args))
    else:
        from chatd.server.serve import serve

        run = functools.partial(serve, settings, own_process=True)
    try:
        # A KeyboardInterrupt (Ctrl-C, or SIGTERM while starting) only at a
        # checkpoint of the main task: raised between two bytecodes it can
        # leave a nursery entered and never exited, and trio's state corrupt
        # (tests/cli/test_workers.py saw it: a traceback, or a hang).
        trio.run(run, restrict_keyboard_interrupt_to_checkpoints=True)
    finally:
        # Served: a SIGTERM now has nothing left to stop, and as a
        # KeyboardInterrupt past main()'s try it would make the status 130.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chatd``; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _end_cleanly_on_sigterm()  # in the try: a pending SIGTERM arrives at once
        if args.command == "chat":
            return run_chat(args)
        if args.command == "trace":
            return run_trace(args)
        if args.command == "keys":
            key = new_key()
            print(f"key:  {key}\nhash: {key_hash(key)}")
            print("Give the key to its client; put the hash in server.api_keys (or operator_keys).")
            return 0
        settings = _settings(args)
        configure_logging(settings.log)
        if args.command == "kb":
            from chatd.cli.kb import run_kb_eval, run_kb_load

            if args.kb_command == "eval":
                return run_kb_eval(settings, args.file, args.gate, args.show, args.half)
            return run_kb_load(settings, args.file)
        if args.command == "serve":
            _serve(args, settings)
        else:
            trio.run(_run_sim, settings)
    except (ConfigError, ServerFailed, BaseExceptionGroup, KeyboardInterrupt) as exc:
        error = first_leaf(exc)
        if isinstance(error, KeyboardInterrupt):
            return 0
        if isinstance(error, ServerFailed):
            print(f"chatd: {error}", file=sys.stderr)
            return 1
        if not isinstance(error, ConfigError):
            raise
        print(f"chatd: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
