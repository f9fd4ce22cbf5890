"""Events as a finished answer is kept: runs of tokens merged, nothing else touched."""

from __future__ import annotations

from chatd.pipeline.events import Accepted, Route, Token, ToolEnd, ToolStart, merged


def test_runs_of_tokens_become_one_and_the_rest_keeps_its_order() -> None:
    """Each run of tokens is one token with the run's text; other events stay
    where they were, so a replay reads the same."""
    events = [
        Accepted("r"),
        ToolStart("c1", "clock", {}),
        ToolEnd("c1", "clock", True, 3),
        Route("tools", ("clock",)),
        Token("It "),
        Token("is "),
        Token("noon."),
    ]
    assert merged(events) == (*events[:4], Token("It is noon."))
    assert merged([Token("a"), Route("direct"), Token("b"), Token("c")]) == (
        Token("a"),
        Route("direct"),
        Token("bc"),
    )
    assert merged([]) == ()
