"""The listening socket, bound before anything else happens (the first log
line names it), and what ``--workers N`` shares with its workers.

Imports nothing of chatd but its config and exceptions, so the supervisor of
``--workers N`` loads none of the server.
"""

from __future__ import annotations

import os
import socket

from chatd.config import Settings
from chatd.exceptions import ConfigError

__all__ = ["WORKER_ENV", "listen", "url_of"]

WORKER_ENV = "CHATD_INHERIT_WORKER"
"""Set for a worker of ``--workers N``: its number, from 1, put on its log lines."""


def listen(settings: Settings) -> tuple[str, socket.socket]:
    """Bind and listen now, before anything else logs, so the first log line can
    name the address; the front door accepts on it. The
    workers of ``--workers N`` each listen on the same port with SO_REUSEPORT,
    and the kernel spreads new connections over them."""
    try:
        sock = socket.create_server(
            (settings.server.host, settings.server.port),
            backlog=1024,
            reuse_port=WORKER_ENV in os.environ,
        )
    except OSError as exc:
        where = f"{settings.server.host}:{settings.server.port}"
        raise ConfigError(f"server: cannot listen on {where}: {exc.strerror}") from exc
    return url_of(sock), sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"
