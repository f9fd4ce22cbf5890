"""How the simulator talks: small talk, the pleasantries around a question, chit-chat.

Three things a sensible small model does with conversational language:

- :func:`small_talk_reply` answers a message that is only small talk
  (greetings, thanks, "who are you?", "ok", "bye") as a shop assistant would:
  in kind, then with an offer of what it can help with;
- :func:`strip_pleasantries` takes the greeting and filler off a question
  ("hi, quick question: ...", "..., thanks in advance"), so a tool is asked
  the question itself;
- :func:`compose_reply` answers anything else that is not for a tool.

Every reply is a pure function of the message, so one message always gets one
answer, in every process. :func:`compose_reply` stitches fixed sentences picked
by a generator seeded with a SHA-256 of the message (Python's own ``hash`` of a
string changes between runs). Replies run about 25 to 60 words, long enough for
streaming to be visible and for answer-cache and singleflight tests to compare
something non-trivial.
"""

from __future__ import annotations

import hashlib
import random
import re

__all__ = ["compose_reply", "is_small_talk", "small_talk_reply", "strip_pleasantries"]

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


# --- small talk ---------------------------------------------------------------------------
#
# A message is small talk when it is nothing but phrases of the kinds below,
# in any order, with any punctuation between them: "hi, how are you?",
# "thanks so much, bye!". Patterns are matched case-insensitively against the
# message with typographic apostrophes made plain, and must end at a word's end.

_ADDRESSEE = (
    r"(?:\s+(?:there|again|everyone|all|folks|friend|buddy|mate|team|guys|bot|chatbot|assistant))*"
)
_GREETING = (
    r"(?:hi|hello|hey|heya|hiya|howdy|yo|greetings|hallo|hola"
    r"|good\s+(?:morning|afternoon|evening|day)|morning|evening"
    r"|(?:are\s+you|is\s+any(?:one|body))\s+there)"
)
_WELLBEING = (
    r"(?:how\s+are\s+(?:you|u|ya|things)(?:\s+doing)?|how(?:'s|\s+is)\s+it\s+going"
    r"|how\s+do\s+you\s+do|how\s+have\s+you\s+been|what'?s\s+up|sup"
    r"|(?:i\s+)?hope\s+you(?:'re|\s+are)\s+(?:well|doing\s+well|good))(?:\s+today)?"
)
_PLEASANTRY = (
    r"(?:(?:it's\s+)?(?:nice|good|great|pleased|glad)\s+to\s+(?:meet|see)\s+you(?:\s+too)?)"
)
_THANKS = (
    r"(?:(?:many\s+)?(?:thanks|thank\s+(?:you|u)|thx|ty|tysm|cheers)"
    r"|much\s+appreciated|(?:i\s+)?appreciate\s+(?:it|that|this|your\s+help))"
    r"(?:\s+(?:so|very)\s+much|\s+a\s+(?:lot|bunch|million|ton)|\s+again|\s+kindly|\s+in\s+advance"
    r"|\s+for\s+(?:your|the|all\s+the|all\s+your)\s+(?:help|info|information|answer|answers|support"
    r"|reply|time)|\s+for\s+(?:that|this|everything|helping|asking))*"
)
_IDENTITY = (
    r"(?:who\s+(?:are|r)\s+(?:you|u)|what\s+are\s+you|what(?:'s|\s+is)\s+your\s+name"
    r"|who\s+am\s+i\s+(?:talking|speaking|chatting)\s+(?:to|with)|introduce\s+yourself"
    r"|tell\s+me\s+about\s+yourself"
    r"|are\s+you\s+(?:a\s+|an\s+)?(?:bot|robot|human|person|real\s+person|real|ai|machine))"
)
_ABILITIES = (
    r"(?:what\s+(?:can|could|do)\s+you\s+(?:do|help\s+(?:me\s+)?with)|what\s+are\s+you\s+able\s+to\s+do"
    r"|what\s+can\s+i\s+ask(?:\s+you)?|how\s+can\s+you\s+help(?:\s+me)?|what\s+do\s+you\s+know)"
    r"(?:\s+for\s+me)?"
)
_HELP = (
    r"(?:(?:can|could|would|will)\s+you\s+(?:please\s+)?help(?:\s+me)?(?:\s+out)?"
    r"|(?:i\s+)?need\s+(?:some\s+)?help|(?:please\s+)?help(?:\s+me)?)(?:\s+please)?"
)
_FAREWELL = (
    r"(?:bye(?:[\s-]*bye)?|good\s*bye|see\s+(?:you|ya)(?:\s+(?:later|soon|around))?|cya|later"
    r"|good\s*night|take\s+care|talk\s+(?:to\s+you\s+)?(?:later|soon)|ttyl"
    r"|have\s+a\s+(?:good|nice|great|lovely)\s+(?:day|one|evening|night|weekend))(?:\s+for\s+now)?"
)
_ACK = (
    r"(?:ok(?:ay)?|k+|alright|all\s+right|got\s+it|great|cool|nice|sure|perfect|awesome|excellent"
    r"|wonderful|lovely|fine|good|sounds\s+good|i\s+see|understood|noted|yes|yeah|yep|yup|no|nope"
    r"|nah|oh|ah|aha|hm+|um+|uh|right|wow|lol|ha(?:ha)+|no\s+problem|never\s*mind|nothing\s+else"
    r"|that(?:'s|\s+is)\s+(?:great|good|helpful|perfect|all|it|fine)|that\s+(?:helps|helped)"
    r"|that\s+was\s+helpful|very\s+helpful|(?:i'm|i\s+am)\s+(?:good|fine|all\s+set)|all\s+good)"
)
_KINDS = tuple(
    (kind, re.compile(rf"{pattern}{_ADDRESSEE}(?![\w'])", re.IGNORECASE))
    for kind, pattern in (
        ("greeting", _GREETING),
        ("wellbeing", _WELLBEING),
        ("pleasantry", _PLEASANTRY),
        ("thanks", _THANKS),
        ("identity", _IDENTITY),
        ("abilities", _ABILITIES),
        ("help", _HELP),
        ("farewell", _FAREWELL),
        ("ack", _ACK),
    )
)
_BETWEEN = re.compile(r"[^\w']*")
_MAX_SMALL_TALK_CHARS = 200  # longer than any run of pleasantries: not worth parsing

_SERVICES = "orders, shipping, returns and refunds, payments and your account"
_GREETING_REPLIES = (
    (re.compile(r"good\s+(morning|afternoon|evening|day)", re.IGNORECASE), None),
    (re.compile(r"\bhey\b", re.IGNORECASE), "Hey there!"),
    (re.compile(r"\bhi\b", re.IGNORECASE), "Hi there!"),
)
_INTRODUCING = frozenset({"greeting", "wellbeing", "pleasantry", "identity", "abilities", "help"})


def _plain(text: str) -> str:
    """``text`` with typographic apostrophes made plain; the same length, so offsets hold."""
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _small_talk_kinds(message: str) -> list[str] | None:
    """The kinds of small talk ``message`` is made of, in order; None if it is more than that."""
    text = _plain(message)
    if len(text) > _MAX_SMALL_TALK_CHARS:
        return None
    position = _BETWEEN.match(text).end()  # type: ignore[union-attr]  # matches anything
    if position == len(text):
        return None
    kinds: list[str] = []
    while position < len(text):
        # The longest phrase at this point wins: "thank you so much", not "thank you".
        best: tuple[int, str] | None = None
        for kind, pattern in _KINDS:
            match = pattern.match(text, position)
            if match is not None and (best is None or match.end() > best[0]):
                best = (match.end(), kind)
        if best is None:
            return None
        kinds.append(best[1])
        position = _BETWEEN.match(text, best[0]).end()  # type: ignore[union-attr]
    return kinds


def is_small_talk(message: str) -> bool:
    """Whether ``message`` is only greetings, thanks, "who are you?", "ok", "bye" and the like."""
    return _small_talk_kinds(message) is not None


def small_talk_reply(message: str) -> str | None:
    """The shop assistant's answer to a message that is only small talk, else None.

    It answers in kind (a greeting with a greeting, thanks with "you're
    welcome", "who are you?" with who it is), then says what it can help with
    and offers to, or says goodbye. 25 to 60 words, like :func:`compose_reply`.
    """
    kinds = _small_talk_kinds(message)
    if kinds is None:
        return None
    said = set(kinds)
    sentences: list[str] = []
    if "greeting" in said:
        sentences.append(_greeting_back(message))
    if "wellbeing" in said:
        sentences.append("I'm doing well, thanks for asking!")
    if "pleasantry" in said:
        sentences.append("Nice to meet you too!")
    if "thanks" in said:
        sentences.append("You're welcome, happy to help!")
    if "help" in said:
        sentences.append("Of course, that's what I'm here for.")
    if not sentences and "ack" in said:
        sentences.append("Alright!")
    introducing = bool(said & _INTRODUCING)
    if "identity" in said:
        sentences.append(
            "I'm the chatd demo store's assistant, a simulated language model running inside chatd."
        )
    elif introducing:
        sentences.append("I'm the chatd demo store's assistant.")
    if "farewell" in said:
        sentences.append("Goodbye, and thanks for stopping by!")
        sentences.append(f"If you need anything later about {_SERVICES}, just come back.")
        sentences.append("Have a great day!")
    elif introducing:
        sentences.append(
            f"I can answer questions about {_SERVICES}, and I can also do arithmetic and tell "
            "you the time."
        )
        sentences.append("What can I help you with today?")
    else:
        sentences.append(
            f"If anything else comes up about {_SERVICES}, just ask; I can also do arithmetic "
            "and tell you the time."
        )
    return " ".join(sentences)


def _greeting_back(message: str) -> str:
    """A greeting in the words of ``message``'s own: "Good morning!" for "good morning"."""
    for pattern, reply in _GREETING_REPLIES:
        match = pattern.search(message)
        if match is not None:
            return reply or f"Good {match.group(1).lower()}!"
    return "Hello!"


# --- the pleasantries around a question -------------------------------------------------
#
# Leading greetings and fillers come off one after another ("hi, quick
# question: ..."). A greeting word or a bare "ok"/"oh"/"um" may be followed by
# a space alone ("hi where is my order?"); anything longer needs punctuation
# after it, so "how are you able to ship so fast?" keeps its "how are you".

_SPACED_LEADS = (
    r"(?:hi|hello|hey|heya|hiya|howdy|hallo|hola)(?:\s+(?:there|again|everyone|folks|team))?"
    r"|ok(?:ay)?|oh|ah|um+|uh|hm+|btw"
)
_FILLER = (
    r"(?:a\s+)?quick\s+question|(?:i\s+have|i've\s+got|got)\s+a\s+(?:quick\s+)?question|question"
    r"|one\s+more\s+(?:thing|question)|(?:sorry|apologies)\s+to\s+(?:bother|trouble)\s+you|sorry"
    r"|excuse\s+me|pardon\s+me|just\s+wondering|by\s+the\s+way|so|well|alright|also"
)
_LEAD = re.compile(
    rf"(?:(?:{_SPACED_LEADS})(?![\w'])(?:\s*[,:;!.\-\u2013\u2014]+\s*|\s+)"
    rf"|(?:{_GREETING}|{_WELLBEING}|{_THANKS}|{_FILLER}){_ADDRESSEE}(?![\w'])"
    r"\s*[,:;!.\-\u2013\u2014]+\s*)",
    re.IGNORECASE,
)
_TRAIL = re.compile(
    r"(?P<gap>[^\w'?]*)\b(?P<phrase>(?:many\s+)?(?:thanks|thank\s+you|thx|ty|cheers)"
    r"(?:\s+(?:so\s+much|a\s+lot|very\s+much|again|in\s+advance))*|please|pls|plz)"
    r"(?P<end>[^\w']*)$",
    re.IGNORECASE,
)
_THEN = re.compile(r"(?:but|and|so)\s+(?=\w)", re.IGNORECASE)  # "sorry to bother you, but ..."
_PUNCTUATION = frozenset(",;:.!?-\u2013\u2014")


def strip_pleasantries(text: str) -> str:
    """``text`` without the greetings and fillers before its question or the thanks after it.

    "hi, quick question: how long does shipping take?" gives "how long does
    shipping take?"; "where is my order please?" gives "where is my order?".
    Text with no such wrapper comes back unchanged, character for character,
    and so does text that is nothing but pleasantries.
    """
    plain = _plain(text)
    start, end = 0, len(text)
    while (match := _LEAD.match(plain, start)) is not None and match.end() < end:
        start = match.end()
    if start > 0 and (then := _THEN.match(plain, start)) is not None:
        start = then.end()
    trail = _TRAIL.search(plain, start, end)
    suffix = ""
    if trail is not None and trail.start() > start:
        before = plain[start : trail.start()].rstrip()
        separated = any(c in _PUNCTUATION for c in trail["gap"]) or before[-1:] in _PUNCTUATION
        phrase = trail["phrase"].lower()
        if separated or phrase in {"please", "pls", "plz"} or phrase.endswith("in advance"):
            end = start + len(before)
            while end > start and plain[end - 1] in ",;:-\u2013\u2014":
                end -= 1
            if "?" in trail["end"] and not plain[start:end].endswith("?"):
                suffix = "?"
    core = text[start:end].rstrip() + suffix
    if (start, end) == (0, len(text)) or not any(c.isalnum() for c in core):
        return text
    return core
