"""What request logs and metrics cost: chatd's CPU per request with logs on and off.

1. End to end: one simulated LLM and one chatd (``python -m chatd serve``) per configuration,
   side by side, differing only in ``CHATD_LOG_*`` (logs on; off; on with the text; a second
   logs-off process as an A/A control), take the same load in turns; each chatd's CPU and log
   growth are divided by the requests answered. Then (unless ``--no-profile``) more rounds
   under py-spy: the share of each process's CPU spent in structlog calls.
2. In process: the metrics calls and one request's trace per path, logged by chatd's own
   structlog set-up, timed in a loop.

The report says how each figure is taken. Results go to
benchmarks/results/observability{,-quick}.{json,md}.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).parent))
from loadgen import profiling
from loadgen.observability_e2e import Measured, Params, log_shape, measure_end_to_end
from loadgen.observability_micro import micro_metrics, micro_traces
from loadgen.observability_processes import Config, read_from, spawn_chatd, wait_listening
from loadgen.processes import log_tails_on_failure, start_sim
from loadgen.script import RunRecord, script_parser
from machine import write_results
from reports.observability import markdown

# comparisons.py (run by targets.py) imports these from here.
__all__ = ["Params", "configs_for", "run_end_to_end"]

RESULTS = Path(__file__).parent / "results"


# The configurations: label: (description, CHATD_LOG_LEVEL, more settings). All write JSON to a
# file. The control, logs-off-2, is a second logs-off process: how far two chatd processes
# differ when nothing does (an A/A test). It comes next to logs-off, as logs-on is on its other
# side: in the ABCD DCBA order both pairs are always measured one after the other.
CONFIGS = {
    "logs-on": ("JSON to a file, level info", "info", {}),
    "logs-off": ("level error: spans and summaries filtered out", "error", {}),
    "logs-off-2": ("as logs-off: a second process (A/A)", "error", {}),
    "logs-on-text": (
        "JSON to a file, level info, include_text",
        "info",
        {"CHATD_LOG_INCLUDE_TEXT": "true"},
    ),
}


def configs_for(workdir: Path, include_text: bool, control: bool) -> list[Config]:
    """The configurations compared, but the control and ``logs-on-text`` if not wanted."""
    left_out = {"logs-off-2": not control, "logs-on-text": not include_text}
    configs = []
    for label, (description, level, extra) in CONFIGS.items():
        if not left_out.get(label):
            log = workdir / f"{label}.jsonl"
            env = {"CHATD_LOG_FILE": str(log), "CHATD_LOG_FORMAT": "json", "CHATD_LOG_LEVEL": level}
            configs.append(Config(label, description, env | extra, log, label == "logs-off-2"))
    return configs


# --- comparison and conclusions ---------------------------------------------------------


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Round-by-round differences ``a - b`` (each pair measured one after the
    other): the rounds, their median, mean and its standard error."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return {
        "by_round": [round(d, 1) for d in diffs],
        "median": round(statistics.median(diffs), 1),
        "mean": round(statistics.fmean(diffs), 1),
        "stderr": round(statistics.stdev(diffs) / len(diffs) ** 0.5, 1) if len(diffs) > 1 else None,
    }


def compare(
    e2e: Mapping[str, Any], micro: Mapping[str, Any], profiles: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Logs on against logs off; the A/A control; the profiles; what part 2 predicts."""
    on, off = e2e["logs-on"], e2e["logs-off"]
    key, by_round, system = (
        "chatd_cpu_us_per_request",
        "chatd_cpu_us_per_request_by_round",
        "chatd_system_us_per_request",
    )
    traces, metrics_us = micro["traces"], micro["metrics"]["per_request_us"]
    file_us, filtered_us = traces["json-file"]["mix_median_us"], traces["filtered"]["mix_median_us"]
    lines = traces["json-file"]["mix_lines_per_request"]
    result: dict[str, Any] = {
        "on_minus_off_us_per_request": round(on[key] - off[key], 1),
        "on_over_off": round(on[key] / off[key], 4),
        "on_minus_off_paired": _paired(on[by_round], off[by_round]),
        "micro_on_minus_off_us": round(file_us - filtered_us, 1),
        "e2e_over_micro": round((on[key] - off[key]) / max(file_us - filtered_us, 1e-9), 2),
        "system_on_minus_off_us": round(on[system] - off[system], 1),
        "micro_render_and_write_us_per_line": round((file_us - filtered_us) / lines, 2),
        "micro_write_us_per_line": round(
            (file_us - traces["json-memory"]["mix_median_us"]) / lines, 2
        ),
        "micro_bookkeeping_us_per_request": filtered_us,
        "micro_metrics_us_per_request": metrics_us,
        "micro_left_with_logs_off_share": round((filtered_us + metrics_us) / off[key], 4),
    }
    if "logs-off-2" in e2e:
        again = e2e["logs-off-2"]
        result["aa_us_per_request"] = round(again[key] - off[key], 1)
        result["aa_ratio"] = round(again[key] / off[key], 4)
        result["aa_paired"] = _paired(again[by_round], off[by_round])
        result["aa_system_us"] = round(again[system] - off[system], 1)
    if "logs-on-text" in e2e:
        text = e2e["logs-on-text"]
        result["text_minus_on_us_per_request"] = round(text[key] - on[key], 1)
        result["text_over_off"] = round(text[key] / off[key], 4)
        result["text_extra_bytes_per_request"] = round(
            text["log_bytes_per_request"] - on["log_bytes_per_request"], 1
        )
    if profiles and "pct" in profiles.get("logs-on", {}) and "pct" in profiles.get("logs-off", {}):
        on_us = profiles["logs-on"]["us_per_request"]
        off_us = profiles["logs-off"]["us_per_request"]
        in_situ = on_us["structlog_calls"] - off_us["structlog_calls"]
        result["in_situ_on_minus_off_us"] = round(in_situ, 1)
        result["in_situ_share_of_on"] = round(in_situ / on[key], 4)
        result["in_situ_write_us"] = on_us["write"]
        result["in_situ_over_micro"] = round(in_situ / max(file_us - filtered_us, 1e-9), 2)
        result["in_situ_left_with_logs_off_us"] = round(off_us["spans"] + off_us["metrics"], 1)
        result["in_situ_on_structlog_us"] = on_us["structlog_calls"]
        if "pct" in profiles.get("logs-on-text", {}):
            text_us = profiles["logs-on-text"]["us_per_request"]["structlog_calls"]
            result["in_situ_text_structlog_us"] = text_us
    return result


def conclusions(e2e: Mapping[str, Any], c: Mapping[str, Any]) -> list[str]:
    """The short answer, in sentences with the numbers."""
    on, off = e2e["logs-on"], e2e["logs-off"]
    key = "chatd_cpu_us_per_request"
    paired = c["on_minus_off_paired"]
    se = f" ± {paired['stderr']} (s.e.)" if paired["stderr"] is not None else ""
    diff = c["on_minus_off_us_per_request"]
    first = (
        f"End to end, chatd with logs on spent **{abs(diff)} µs** "
        f"{'more' if diff >= 0 else 'less'} CPU per request than with logs off ({on[key]} "
        f"against {off[key]} µs, **{(c['on_over_off'] - 1) * 100:+.1f}%**; round by round "
        f"{paired['mean']}{se} µs), "
        f"writing {on['log_lines_per_request']} lines, {on['log_bytes_per_request']:.0f} bytes "
        "per request."
    )
    if "aa_us_per_request" in c:
        aa, aa_paired = c["aa_us_per_request"], c["aa_paired"]
        aa_se = f" ± {aa_paired['stderr']}" if aa_paired["stderr"] is not None else ""
        first += (
            f" The A/A control, two identical logs-off processes, differed by {aa} µs "
            f"({(c['aa_ratio'] - 1) * 100:+.1f}%; round by round {aa_paired['mean']}{aa_se} µs)"
            + (
                ": as much, so end to end alone this run does not pin the cost down."
                if abs(aa) >= abs(diff) / 2
                else ": the difference stands out of the noise between processes."
            )
        )
    lines = [first]
    if "in_situ_on_minus_off_us" in c:
        lines.append(
            "Profiled in the running servers (py-spy: where one process's time goes, free of the "
            f"noise between processes), logs on spend **{c['in_situ_on_minus_off_us']} µs per "
            f"request** ({c['in_situ_share_of_on'] * 100:.1f}% of chatd's CPU) in structlog calls "
            f"beyond logs off's filtered ones. {c['in_situ_write_us']} µs of that has the write(2) "
            "of a line as its leaf; py-spy counts a thread that is runnable as well as one "
            "running, so that may include waiting for a CPU after the write (two cores, four "
            "busy processes), and chatd's system time does not settle it: it differs by "
            f"{c['system_on_minus_off_us']} µs per request between logs on and off"
            + (f", by {c['aa_system_us']} µs in the A/A control." if "aa_system_us" in c else ".")
        )
    micro_line = (
        f"In one process's tight loop, rendering and writing a request's lines costs "
        f"{c['micro_on_minus_off_us']} µs ({c['micro_render_and_write_us_per_line']} µs per "
        f"line, {c['micro_write_us_per_line']} µs of it the write(2)): a floor"
    )
    ratios = []
    if c["e2e_over_micro"] > 1:
        ratios.append(f"{c['e2e_over_micro']}x that end to end")
    if c.get("in_situ_over_micro", 0) > 1:
        ratios.append(f"{c['in_situ_over_micro']}x in the profile")
    if ratios:
        micro_line += (
            f". In the server the same lines cost {' and '.join(ratios)}, likely because there a "
            "request's lines are written one at a time among other work, not back to back, so "
            "code and data are cold each time"
        )
    lines.append(micro_line + ".")
    left = (
        "With logs off, what remains is the traces' bookkeeping "
        f"({c['micro_bookkeeping_us_per_request']} µs per request in the loop: spans kept, log "
        f"calls filtered) and the metrics ({c['micro_metrics_us_per_request']} µs for "
        "`request_finished` + `cancelled`): "
        f"{c['micro_left_with_logs_off_share'] * 100:.1f}% of chatd's CPU per request"
    )
    if "in_situ_left_with_logs_off_us" in c:
        left_us = c["in_situ_left_with_logs_off_us"]
        left += f"; {left_us} µs ({left_us / off[key] * 100:.1f}%) in the logs-off profile"
    lines.append(left + ".")
    if "text_minus_on_us_per_request" in c:
        text = (
            f"`include_text` adds {c['text_extra_bytes_per_request']:.0f} bytes per request (the "
            "message and the answer in the summary); end to end it measured "
            f"{c['text_minus_on_us_per_request']:+} µs of CPU per request over logs on"
        )
        if "aa_us_per_request" in c:
            text += f" (the A/A control: {c['aa_us_per_request']:+} µs)"
        if c["text_minus_on_us_per_request"] < 0:
            text += ": less, which only the noise between processes can explain"
        if "in_situ_text_structlog_us" in c:
            text += (
                f"; in situ its structlog calls took {c['in_situ_text_structlog_us']} µs per "
                f"request against {c['in_situ_on_structlog_us']} µs with logs on"
            )
        lines.append(text + ".")
    return lines


# --- main -------------------------------------------------------------------------------


def run_end_to_end(
    params: Params,
    configs: Sequence[Config],
    chatd_path: Path,
    workdir: Path,
    py_spy: str | None = None,
) -> dict[str, Any]:
    """Part 1 from start to end: a simulator and one chatd per configuration, measured
    with :func:`measure_end_to_end`; every process is killed on the way out."""
    with contextlib.ExitStack() as stack:
        sim = start_sim(workdir, chatd_path, params.sim_ttft_ms, params.sim_tokens_per_s, stack)
        runs = [
            Measured(c, spawn_chatd(c, sim.listening["url"], chatd_path, workdir, stack))
            for c in configs
        ]
        try:
            with log_tails_on_failure((sim, *(m.process for m in runs))):
                for m in runs:
                    wait_listening(m.process)
                return trio.run(measure_end_to_end, runs, sim, params, py_spy)
        except BaseException:
            for c in configs:
                print(f"--- {c.label} log file tail ---", file=sys.stderr)
                print(read_from(c.log_file, 0).decode(errors="replace")[-2000:], file=sys.stderr)
            raise


def main() -> None:
    parser = script_parser(__doc__, "a short run (well under a minute)", chatd_path=True)
    parser.add_argument("--connections", type=int, help="connections per chatd (50; quick 30)")
    parser.add_argument("--chats", type=int, help="questions per connection per round (6; quick 3)")
    parser.add_argument("--rounds", type=int, help="measured rounds per configuration (8; quick 2)")
    parser.add_argument("--no-text", action="store_true", help="leave out logs-on-text")
    parser.add_argument(
        "--no-control", action="store_true", help="leave out logs-off-2, the A/A control"
    )
    parser.add_argument(
        "--no-profile",
        action="store_true",
        help="skip profiling each chatd (but the control) under load with py-spy",
    )
    args = parser.parse_args()
    quick = bool(args.quick)
    params = Params(
        quick=quick,
        connections=args.connections or (30 if quick else 50),
        chats_per_connection=args.chats or (3 if quick else 6),
        rounds=args.rounds or (2 if quick else 8),
        include_text=not args.no_text,
        control=not args.no_control,
        profile=not args.no_profile,
        profile_rounds=2 if quick else 5,
        micro_requests=300 if quick else 2000,
        micro_repeats=3 if quick else 5,
        metrics_calls=20_000 if quick else 100_000,
    )
    chatd_path: Path = args.chatd_path.resolve()
    record = RunRecord.start(__file__, chatd_path)
    py_spy = profiling.find_py_spy() if params.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        workdir = Path(tmp)
        configs = configs_for(workdir, params.include_text, params.control)
        measured = run_end_to_end(params, configs, chatd_path, workdir, py_spy)
        info = [c for c in configs if c.env["CHATD_LOG_LEVEL"] == "info"]
        shapes = {c.label: log_shape(c.log_file) for c in info}
        micro = {"metrics": micro_metrics(params), "traces": micro_traces(params, workdir)}
    profiles = measured["profiles"]
    if params.profile and py_spy is None:
        profiles = {"skipped": profiling.PY_SPY_MISSING}
    figures = {
        "e2e": measured["configs"],
        "profiles": profiles,
        "log_shape": shapes,
        "micro": micro,
    }
    result = record.result(
        "observability: chatd CPU per request with logs on and off", params, figures
    )
    result["comparison"] = compare(result["e2e"], micro, result["profiles"])
    result["conclusions"] = conclusions(result["e2e"], result["comparison"])
    name = "observability" + ("-quick" if quick else "")
    write_results(RESULTS, name, result, markdown(result))


if __name__ == "__main__":
    main()
