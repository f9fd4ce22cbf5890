"""PNG plots of a ``targets.py`` result, with matplotlib (the ``bench`` extra).

- ``ttft``: the distribution (ECDF) of client time to first token per path;
- ``throughput``: tokens/s and server CPU over time, for each loaded run;
- ``rss``: server RSS over idle connections, and chatd's RSS over the soak.

A missing or failed section leaves its curves out.
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
        if (dt := b["t_s"] - a["t_s"]) > 0:
            times.append((a["t_s"] + b["t_s"]) / 2)
            values.append((b[key] - a[key]) / dt)
    return times, values


def _mib(points: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """(x, RSS in MiB) of (x, RSS KiB) points."""
    return [x for x, _ in points], [kib / 1024 for _, kib in points]


def _ttft(sections: Mapping[str, Any], ax: Any) -> None:
    curves = {}
    if paths := sections.get("paths"):
        curves = {f"{kind} (unloaded)": v["samples_ms"] for kind, v in paths["paths"].items()}
    if streams := sections.get("streams"):
        curves[f"direct, {streams['users']} streams"] = streams["ttft_samples_ms"]
    for label, values in curves.items():
        if values:
            ordered = sorted(values)
            fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
            ax.step(ordered, fractions, where="post", label=f"{label} (n={len(ordered)})")
    ax.set(xlabel="client time to first token, ms", ylabel="fraction of requests",
           title="Time to first token by path")  # fmt: skip


def _throughput(sections: Mapping[str, Any], top: Any, bottom: Any) -> None:
    runs: dict[str, Sequence[Mapping[str, float]]] = {}
    if floor := sections.get("floor"):
        for server, samples in floor["samples"].items():
            runs[f"{server}, {floor['users']} × {floor['tokens_per_s_each']:g} tok/s"] = samples
    if streams := sections.get("streams"):
        label = f"chatd, {streams['users']} × {streams['tokens_per_s_each']:g} tok/s"
        runs[label] = streams["samples"]
    for label, samples in runs.items():
        top.plot(*rates(samples, "tokens"), label=label)
        bottom.plot(*rates(samples, "chatd_cpu_s"), label=label)
    top.set(ylabel="tokens/s answered", title="Throughput and server CPU over time")
    bottom.set(xlabel="seconds from the start of the run", ylabel="server CPU, cores")


def _rss(sections: Mapping[str, Any], left: Any, right: Any) -> None:
    for server, v in (sections.get("idle") or {}).items():
        each = v["delta_kib_per_connection"]
        left.plot(*_mib(v["points"]), marker=".", label=f"{server}: {each:g} KiB each")
    left.set(xlabel="idle WebSocket connections", ylabel="server RSS, MiB",
             title="RSS over idle connections")  # fmt: skip
    if soak := sections.get("soak"):
        right.plot(*_mib(soak["samples"]), label="while running")
        checkpoints = [(c["requests"], c["rss_kib"]) for c in soak["checkpoints"]]
        right.plot(*_mib(checkpoints), "o", label="settled, at each checkpoint")
    right.set(xlabel="requests sent", ylabel="chatd RSS, MiB", title="RSS over the soak")


def draw_plots(sections: Mapping[str, Any], directory: Path, name: str, suffix: str) -> list[str]:
    """Draw every plot as ``name-PLOT{suffix}.png`` in ``directory``; the files written
    (names relative to ``directory``), or one line saying why none were."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(no plots: matplotlib is not installed; pip install -e '.[bench]')"]
    ok = {k: s for k, s in sections.items() if "failed" not in s}
    written = []
    for plot, draw, grid, size in (
        ("ttft", _ttft, (1, 1), (8, 4.5)),
        ("throughput", _throughput, (2, 1), (8, 6)),
        ("rss", _rss, (1, 2), (10, 4)),
    ):
        fig, axes = plt.subplots(*grid, figsize=size, sharex=plot == "throughput", squeeze=False)
        axes = list(axes.flat)
        draw(ok, *axes)
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
        fig.tight_layout()
        out = directory / f"{name}-{plot}{suffix}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out.name)
    return written
