"""Data shipped with chatd: ``faq.jsonl``, the sample FAQ of the "chatd demo store"."""
