"""chatd: a chatbot backend on trio's structured concurrency."""

__version__ = "0.1.0"
