"""The simulator's direct answers: friendly, plausible, and the same every time.

A reply is stitched from fixed sentences picked by a generator seeded with a
SHA-256 of the message, so one message always gets one answer, in every
process (Python's own ``hash`` of a string changes between runs). Replies run
25 to 60 words, long enough for streaming to be visible and for answer-cache
and singleflight tests to compare something non-trivial.
"""

from __future__ import annotations

import hashlib
import random
import re

__all__ = ["compose_reply"]

_OPENERS = (
    "Thanks for reaching out!",
    "Happy to help with that.",
    "Good to hear from you.",
    "That's a fair point to raise.",
    "Sure, let me share a few thoughts.",
    "Glad you asked.",
    "Thanks for the message.",
    "Of course, here is my take.",
)
_MIDDLES = (
    "It helps to take things one step at a time and see what works for you.",
    "Many people find that a short break brings a fresh perspective.",
    "I can look things up with the tools I have if you need specifics.",
    "There is usually more than one sensible way to approach this.",
    "A little planning up front tends to save time later on.",
    "If anything is unclear, feel free to ask a follow-up question.",
    "Keeping notes as you go makes it easier to pick things up again.",
    "Small, steady progress often beats one big push.",
    "It is worth checking the details before committing to a plan.",
    "Sharing what you have already tried helps me give better suggestions.",
    "Most of this comes down to what matters most to you right now.",
    "I am here whenever you want to talk it through further.",
)
_CLOSERS = (
    "Let me know how it goes!",
    "Is there anything else I can help with?",
    "Hope that helps a bit.",
    "Have a great day!",
    "Just say the word if you want more detail.",
    "Good luck with it!",
)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_MIN_WORDS, _MAX_WORDS = 25, 60


def compose_reply(message: str) -> str:
    """A deterministic friendly reply of 25 to 60 words to ``message``."""
    seed = int.from_bytes(hashlib.sha256(message.encode("utf-8", "surrogatepass")).digest()[:8])
    rng = random.Random(seed)
    sentences = [rng.choice(_OPENERS)]
    topic = _topic(message)
    if topic:
        sentences.append(f'You mentioned "{topic}", which is a good thing to think about.')
    middles = rng.sample(_MIDDLES, k=len(_MIDDLES))
    closer = rng.choice(_CLOSERS)
    while _words(sentences) + _words([closer]) < _MIN_WORDS:
        sentences.append(middles.pop())
    if rng.random() < 0.5 and _words([*sentences, middles[-1], closer]) <= _MAX_WORDS:
        sentences.append(middles.pop())
    sentences.append(closer)
    return " ".join(sentences)


def _topic(message: str) -> str:
    """The message's longest word, to make the reply look like it listened."""
    words = _WORD.findall(message)
    return max(words, key=len).lower() if words else ""


def _words(sentences: list[str]) -> int:
    return sum(len(sentence.split()) for sentence in sentences)
