"""The knowledge-base contract: every backend in conftest's KB_BACKENDS passes it.

Also the FAQ file reader and the shared scoring, which every backend uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import structlog
import trio

from chatd.config import KBSettings
from chatd.exceptions import ConfigError
from chatd.stores.kb import (
    FAQEntry,
    KnowledgeBase,
    load_faq_file,
    open_knowledge_base,
    rank,
    sample_faq,
)
from chatd.stores.kb.eval import evaluate, load_eval_set
from chatd.stores.kb.rank import MAX_QUERY_TERMS, Evidence, query_terms, stems

MIN_CONFIDENCE = 0.75  # tools.faq_min_confidence's default
# What the held-out half of the evaluation set shows at the shipped gate
# (benchmarks/results/kb.md): a floor against regressions. Issue 16's bar
# (hit >= 85%, wrong entry <= 2%, off-topic answered <= 5%) is not met yet.
HIT_AT_LEAST = 0.60
WRONG_AT_MOST = 0.06
OFF_TOPIC_AT_MOST = 0.09
TIMEOUT = 20

PARAPHRASES = [
    ("how do I reset my password?", "How do I reset my password?"),
    ("where is my order?", "Where is my order?"),
    ("can I return shoes I wore once?", "Can I return shoes or clothes I have already worn?"),
    ("I forgot my password", "How do I reset my password?"),
    ("how long will delivery take?", "How long does shipping take?"),
    ("do you ship to Canada?", "Do you ship internationally?"),
    ("can I pay with PayPal?", "What payment methods do you accept?"),
    ("I was double charged", "I was charged twice for the same order."),
    ("when will I get my money back?", "When will I get my refund?"),
    ("what are your opening hours?", "What are your customer service hours?"),
    ("do gift cards expire?", "Do gift cards expire?"),
    ("how can I close my account", "How do I delete my account?"),
    ("how do I cancel my order", "How do I cancel my order?"),
    ("why did you cancel my order?", "Why was my order cancelled?"),
    ("how can I talk to a human?", "How can I contact customer support?"),
    ("my package never arrived", "My package hasn't arrived. Is it lost?"),
    ("Do you sell my personal information?", "Do you sell my data to third parties?"),
    ("is there a warranty on your products?", "Do your products come with a warranty?"),
]

OFF_TOPIC = [
    "who won the 1998 world cup?",
    "what's the weather like in Paris today?",
    "what is the capital of France?",
    "how do I bake sourdough bread?",
    "recommend a good movie",
    "How do I order a pizza?",
    "explain quantum entanglement",
]

INJECTIONS = [
    'AND OR NOT * " ( ) NEAR',
    'NEAR(shipping refund, 2) AND "',
    "question:* OR answer:* OR tags:*",
    "{question answer tags} : *",
    "^ship* + -password",
    '"unterminated',
    "'; DROP TABLE faq; --",
]


async def test_sample_faq_loads_on_first_open_only(kb_settings: KBSettings) -> None:
    """The first open seeds the sample FAQ and logs it; a second open does neither."""
    with trio.fail_after(TIMEOUT):
        with structlog.testing.capture_logs() as first_logs:
            async with open_knowledge_base(kb_settings) as kb:
                assert await kb.count() == len(sample_faq())
        with structlog.testing.capture_logs() as second_logs:
            async with open_knowledge_base(kb_settings) as kb:
                assert await kb.count() == len(sample_faq())
    assert [log["entries"] for log in first_logs if "sample FAQ" in log["event"]] == [
        len(sample_faq())
    ]
    assert not [log for log in second_logs if "sample FAQ" in log["event"]]


def test_sample_faq_is_a_realistic_size() -> None:
    """The shipped FAQ has at least 60 tagged entries with distinct questions."""
    entries = sample_faq()
    assert len(entries) >= 60
    assert len({entry.question.casefold() for entry in entries}) == len(entries)
    assert all(entry.tags and entry.answer for entry in entries)


@pytest.mark.parametrize(("query", "question"), PARAPHRASES)
async def test_paraphrased_question_finds_its_entry_confidently(
    kb: KnowledgeBase, query: str, question: str
) -> None:
    """A customer's wording finds the right entry first, above the confidence bar."""
    with trio.fail_after(TIMEOUT):
        passages = await kb.search(query)
    assert passages, query
    assert passages[0].question == question
    assert passages[0].confidence >= MIN_CONFIDENCE
    assert passages[0].score > 0


@pytest.mark.parametrize("query", OFF_TOPIC)
async def test_off_topic_question_is_not_confident(kb: KnowledgeBase, query: str) -> None:
    """Questions the shop's FAQ does not cover never pass the confidence bar."""
    with trio.fail_after(TIMEOUT):
        passages = await kb.search(query)
    assert all(passage.confidence < MIN_CONFIDENCE for passage in passages)


async def test_search_is_ranked_and_bounded(kb: KnowledgeBase) -> None:
    """Passages come best first, at most ``limit``, confidences within [0, 1]."""
    with trio.fail_after(TIMEOUT):
        passages = await kb.search("refund for my returned order", limit=5)
        single = await kb.search("refund for my returned order", limit=1)
    assert len(passages) == 5
    confidences = [p.confidence for p in passages]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= p.confidence <= 1.0 for p in passages)
    assert single == passages[:1]


@pytest.mark.parametrize("query", INJECTIONS)
async def test_fts_syntax_in_user_text_is_plain_text(kb: KnowledgeBase, query: str) -> None:
    """FTS operators in a question neither raise nor match every entry."""
    with trio.fail_after(TIMEOUT):
        total = await kb.count()
        passages = await kb.search(query, limit=total)
        assert len(passages) < total
        assert await kb.count() == total


@pytest.mark.parametrize("query", ["", "   ", "?!*()", "how do I ... can you?"])
async def test_query_without_significant_terms_finds_nothing(kb: KnowledgeBase, query: str) -> None:
    """Empty, punctuation-only and stop-word-only queries return no passages."""
    with trio.fail_after(TIMEOUT):
        assert await kb.search(query) == []


async def test_add_counts_new_and_changed_entries(empty_kb: KnowledgeBase) -> None:
    """``add`` reports new or changed entries; the same question (any case) replaces."""
    entries = [
        FAQEntry("Do you sell telescopes?", "Yes, three models.", ("astronomy", "telescope")),
        FAQEntry("Is the observatory open at night?", "Every clear night until 2 am."),
    ]
    with trio.fail_after(TIMEOUT):
        assert await empty_kb.count() == 0
        assert await empty_kb.add(entries) == 2
        assert await empty_kb.count() == 2
        assert await empty_kb.add(entries) == 0
        assert await empty_kb.add([FAQEntry("DO YOU SELL TELESCOPES?", "Only one now.")]) == 1
        assert await empty_kb.count() == 2
        assert await empty_kb.add([]) == 0
        passages = await empty_kb.search("telescopes for sale?")
    assert passages[0].answer == "Only one now."
    assert passages[0].tags == ()
    stats = empty_kb.statistics()
    assert (stats.entries, stats.added, stats.searches) == (2, 3, 1)


async def test_version_changes_whenever_entries_do(
    empty_kb: KnowledgeBase, kb_settings: KBSettings
) -> None:
    """Added or changed entries change the version, whoever wrote them (here
    another handle on the same store, as ``chatd kb load`` is another
    process); reading changes nothing."""
    with trio.fail_after(TIMEOUT):
        first = await empty_kb.version()
        await empty_kb.add([FAQEntry("What is chatd?", "A chatbot backend.")])
        second = await empty_kb.version()
        assert second != first
        await empty_kb.search("what is chatd")
        assert await empty_kb.version() == second
        async with open_knowledge_base(kb_settings, seed=False) as other:
            await other.add([FAQEntry("What is chatd?", "A chatbot server.")])
        assert await empty_kb.version() not in (first, second)


async def test_search_returns_tags(empty_kb: KnowledgeBase) -> None:
    """Tags are stored, searchable and returned as given."""
    entry = FAQEntry("Do you sell telescopes?", "Yes.", ("astronomy", "stargazing"))
    with trio.fail_after(TIMEOUT):
        await empty_kb.add([entry])
        passages = await empty_kb.search("stargazing gear")
    assert passages[0].tags == ("astronomy", "stargazing")


async def test_fifty_concurrent_searches_stay_within_the_thread_limit(
    kb: KnowledgeBase,
) -> None:
    """50 searches at once all finish right, never more DB calls at once than allowed."""
    results: dict[int, str] = {}

    async def ask(index: int, query: str) -> None:
        passages = await kb.search(query)
        results[index] = passages[0].question

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for index in range(50):
                query, _ = PARAPHRASES[index % len(PARAPHRASES)]
                nursery.start_soon(ask, index, query)
    assert results == {i: PARAPHRASES[i % len(PARAPHRASES)][1] for i in range(50)}
    stats = kb.statistics()
    assert stats.searches == 50
    assert 1 <= stats.threads_peak <= stats.threads_total
    assert (stats.threads_busy, stats.threads_waiting, stats.errors) == (0, 0, 0)


def test_query_terms_drop_stop_words_and_split_like_sqlite() -> None:
    """Terms are case-folded, deduplicated, split at punctuation; apostrophes go."""
    assert query_terms("How do I RESET my password? Password!") == ["reset", "password"]
    assert query_terms("I don't like ice_cream") == ["ice", "cream"]
    assert query_terms(" ".join(f"w{i}" for i in range(100))) == [
        f"w{i}" for i in range(MAX_QUERY_TERMS)
    ]


def test_query_terms_speak_the_faqs_words() -> None:
    """Filler goes; customers' words and phrases become the FAQ's; accents fold."""
    assert query_terms("hi, quick question: can I send it back?") == ["return"]
    assert query_terms("I want my money back asap thx") == ["refund"]
    assert query_terms("Où est mon colis?") == ["ou", "est", "mon", "colis"]
    assert stems("Deliveries") == stems("delivery") == stems("shipping")


def test_evidence_needs_coverage_and_fit() -> None:
    """Confidence rises with coverage and fit together; nothing matched is 0."""
    full = Evidence(1.0, 1.0, 0.0, 0.0)
    assert full.strength == 1.0 and full.confidence > 0.99
    assert Evidence(1.0, 0.25, 0.0, 0.0).strength == pytest.approx(0.5)
    # The calibration puts the shipped gate near a strength of 0.32.
    assert Evidence(0.32, 1.0, 0.0, 0.0).confidence == pytest.approx(0.76, abs=0.01)
    # A loose match is refused however far it leads the runner-up.
    assert Evidence(0.2, 0.5, 1.0, 0.0).confidence < MIN_CONFIDENCE
    strengths = [Evidence(c / 10, 1.0, 0.0, 0.0).confidence for c in range(1, 11)]
    assert strengths == sorted(strengths)
    assert Evidence(0.0, 1.0, 1.0, 0.0).confidence == 0.0


async def test_the_evaluation_set_meets_the_bar(kb: KnowledgeBase) -> None:
    """The held-out half of chatd/data/faq_eval.jsonl at the shipped gate: every
    backend answers as many of the customers' phrasings with the right entry,
    as few with a wrong one, and as few off-topic messages from the FAQ."""
    cases = [case for case in load_eval_set() if case.split == "test"]
    with trio.fail_after(TIMEOUT * 3):
        report = await evaluate(kb, cases, MIN_CONFIDENCE)
    assert (report.phrasings, report.off_topic) == (140, 48)
    figures = {o: round(report.rate(o), 3) for o in ("hit", "wrong", "answered")}
    assert report.rate("hit") >= HIT_AT_LEAST, figures
    assert report.rate("wrong") <= WRONG_AT_MOST, figures
    assert report.rate("answered") <= OFF_TOPIC_AT_MOST, figures


# --- load_faq_file -------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_jsonl_with_tags(tmp_path: Path) -> None:
    """JSON Lines: tags are a list; blank lines and extra fields are ignored."""
    path = write(
        tmp_path,
        "faq.jsonl",
        '{"question": "  Where is  my order?", "answer": "In transit.", "tags": ["Order", " x"]}\n'
        "\n"
        '{"question": "Do you ship?", "answer": "Yes.", "id": 7}\n',
    )
    assert load_faq_file(path) == [
        FAQEntry("Where is my order?", "In transit.", ("order", "x")),
        FAQEntry("Do you ship?", "Yes."),
    ]


def test_load_csv_with_comma_and_semicolon_tags(tmp_path: Path) -> None:
    """CSV: tags split at commas or semicolons; quoted fields may span lines."""
    path = write(
        tmp_path,
        "faq.csv",
        "question,answer,tags\n"
        'Where is my order?,"In transit,\nsoon.","order, track"\n'
        "Do you ship?,Yes.,shipping;delivery\n"
        "Any returns?,Within 30 days.,\n",
    )
    assert load_faq_file(path) == [
        FAQEntry("Where is my order?", "In transit, soon.", ("order", "track")),
        FAQEntry("Do you ship?", "Yes.", ("shipping", "delivery")),
        FAQEntry("Any returns?", "Within 30 days."),
    ]


def test_json_extension_reads_json_lines(tmp_path: Path) -> None:
    """A ``.json`` file is read as JSON Lines too."""
    path = write(tmp_path, "faq.json", '{"question": "Q?", "answer": "A."}\n')
    assert load_faq_file(path) == [FAQEntry("Q?", "A.")]


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        (
            "f.jsonl",
            '{"question": "Q?", "answer": "A."}\n\n{"question": "Q2?"\n',
            3,
            "not valid JSON",
        ),
        ("f.jsonl", '{"question": "Q?", "answer": "A."}\n["Q?", "A."]\n', 2, "JSON object"),
        ("f.jsonl", '{"question": "Q?"}\n', 1, "'answer' must be a non-empty string"),
        ("f.jsonl", '{"question": "", "answer": "A."}\n', 1, "'question'"),
        ("f.jsonl", '{"question": "Q?", "answer": "A.", "tags": "a,b"}\n', 1, "'tags'"),
        ("f.jsonl", '{"question": 3, "answer": "A."}\n', 1, "'question'"),
        ("f.csv", "question,tags\nQ?,a\n", 1, "header lacks column answer"),
        ("f.csv", "question,answer\nQ?,A.\n,A2.\n", 3, "'question'"),
        ("f.csv", 'question,answer\n"Q\n?",A.\nQ2?\n', 4, "'answer'"),
        ("f.csv", "question,answer\nQ?,A.,extra\n", 2, "more fields"),
        ("f.csv", "question,answer\nQ?,A.\n\n\nQ2?,\n", 5, "'answer'"),
    ],
)
def test_bad_row_names_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, problem: str
) -> None:
    """A bad row is a one-line ConfigError: file, line number, problem."""
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        load_faq_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "problem"), [("faq.txt", ".jsonl, .json or .csv"), ("missing.csv", "cannot read")]
)
def test_unreadable_file_is_a_config_error(tmp_path: Path, name: str, problem: str) -> None:
    """Unknown extensions and missing files are ConfigErrors naming the file."""
    if name.endswith(".txt"):
        write(tmp_path, name, "question,answer\n")
    with pytest.raises(ConfigError, match=problem):
        load_faq_file(tmp_path / name)


def test_stemming_in_threads_gives_each_thread_its_own_words() -> None:
    """The backends rank in worker threads: stems made side by side are the stems
    made one at a time (a shared stemmer swapped words between threads)."""
    stem = rank._stem.__wrapped__  # without the cache, every call stems
    words = sorted({word for entry in sample_faq() for word in stems(entry.answer)})
    expected = [stem(word) for word in words]
    results: list[list[str]] = []
    failures: list[BaseException] = []

    def stem_all() -> None:
        try:
            for _ in range(20):
                results.append([stem(word) for word in words])
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=stem_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    assert len(results) == 80 and all(result == expected for result in results)
