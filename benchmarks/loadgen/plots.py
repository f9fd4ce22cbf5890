"""PNG plots of a ``targets.py`` result, with matplotlib (the ``bench`` extra).

- ``ttft``: the distribution (ECDF) of client time to first token per path;
- ``throughput``: tokens/s and server CPU over time, for each loaded run;
- ``rss``: server RSS over idle connections, and chatd's RSS over the soak.

A missing section leaves its curves out; without matplotlib nothing is drawn
and :func:`draw_plots` says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["draw_plots", "rates"]


def rates(samples: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(mid-times, per-second rate of the cumulative ``key``) between successive samples."""
    times, values = [], []
    for a, b in itertools.pairwise(samples):
        dt = b["t_s"] - a["t_s"]
        if dt > 0:
            times.append((a["t_s"] + b["t_s"]) / 2)
            values.append((b[key] - a[key]) / dt)
    return times, values


def _ecdf(ax: Any, values: Sequence[float], label: str) -> None:
    if values:
        ordered = sorted(values)
        ax.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post",
                label=f"{label} (n={len(ordered)})")  # fmt: skip


def _save(plt: Any, fig: Any, axes: Sequence[Any], out: Path) -> None:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _ok(sections: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    section = sections.get(name)
    return None if section is None or "failed" in section else section


def _ttft(plt: Any, sections: Mapping[str, Any], out: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if paths := _ok(sections, "paths"):
        for kind, v in paths["paths"].items():
            _ecdf(ax, v["samples_ms"], f"{kind} (unloaded)")
    if streams := _ok(sections, "streams"):
        _ecdf(ax, streams["ttft_samples_ms"], f"direct, {streams['users']} streams")
    ax.set(xlabel="client time to first token, ms", ylabel="fraction of requests",
           title="Time to first token by path")  # fmt: skip
    _save(plt, fig, [ax], out)


def _throughput(plt: Any, sections: Mapping[str, Any], out: Path) -> None:
    runs: dict[str, Sequence[Mapping[str, float]]] = {}
    if floor := _ok(sections, "floor"):
        for server, samples in floor["samples"].items():
            runs[f"{server}, {floor['users']} × {floor['tokens_per_s_each']:g} tok/s"] = samples
    if streams := _ok(sections, "streams"):
        runs[f"chatd, {streams['users']} × {streams['tokens_per_s_each']:g} tok/s"] = streams[
            "samples"
        ]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for label, samples in runs.items():
        top.plot(*rates(samples, "tokens"), label=label)
        bottom.plot(*rates(samples, "chatd_cpu_s"), label=label)
    top.set(ylabel="tokens/s answered", title="Throughput and server CPU over time")
    bottom.set(xlabel="seconds from the start of the run", ylabel="server CPU, cores")
    _save(plt, fig, [top, bottom], out)


def _rss(plt: Any, sections: Mapping[str, Any], out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if idle := _ok(sections, "idle"):
        for server in ("chatd", "relay"):
            if server in idle:
                points = idle[server]["points"]
                each = idle[server]["delta_kib_per_connection"]
                left.plot([n for n, _ in points], [r / 1024 for _, r in points], marker=".",
                          label=f"{server}: {each:g} KiB each")  # fmt: skip
    left.set(xlabel="idle WebSocket connections", ylabel="server RSS, MiB",
             title="RSS over idle connections")  # fmt: skip
    if soak := _ok(sections, "soak"):
        right.plot([n for n, _ in soak["samples"]], [r / 1024 for _, r in soak["samples"]],
                   label="while running")  # fmt: skip
        checkpoints = soak["checkpoints"]
        right.plot([c["requests"] for c in checkpoints], [c["rss_kib"] / 1024 for c in checkpoints],
                   "o", label="settled, at each checkpoint")  # fmt: skip
    right.set(xlabel="requests sent", ylabel="chatd RSS, MiB", title="RSS over the soak")
    _save(plt, fig, [left, right], out)


def draw_plots(sections: Mapping[str, Any], directory: Path, name: str, suffix: str) -> list[str]:
    """Draw every plot as ``name-PLOT{suffix}.png`` in ``directory``; the files written
    (names relative to ``directory``), or one line saying why none were."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(no plots: matplotlib is not installed; pip install -e '.[bench]')"]
    written = []
    for plot, draw in (("ttft", _ttft), ("throughput", _throughput), ("rss", _rss)):
        out = directory / f"{name}-{plot}{suffix}.png"
        draw(plt, sections, out)
        written.append(out.name)
    return written
