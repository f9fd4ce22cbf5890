"""A description of the machine a benchmark ran on, for its results file."""

from __future__ import annotations

import datetime
import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any


def describe_machine() -> dict[str, Any]:
    """CPU model, cores (and those this process may use), memory, Python and key library
    versions, date, and the load average as the benchmark starts."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "trio": version("trio"),
        "httpx": version("httpx"),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": len(os.sched_getaffinity(0)),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def machine_markdown(machine: dict[str, Any]) -> str:
    """The machine as a Markdown list."""
    return "\n".join(f"- {key}: {value}" for key, value in machine.items())


def write_results(directory: Path | None, name: str, result: dict[str, Any], md: str) -> None:
    """Write ``name``.json and ``name``.md into ``directory`` and print the Markdown; with
    ``directory`` None (a quick run that keeps no files), only print it."""
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps(result, indent=2, ensure_ascii=False) + "\n"
        (directory / f"{name}.json").write_text(data)
        (directory / f"{name}.md").write_text(md)
    print(md)
