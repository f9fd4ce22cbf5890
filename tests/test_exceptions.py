"""Every error code has an HTTP status and a class a Failure of it is raised as."""

from __future__ import annotations

import pytest

from chatd import exceptions
from chatd.exceptions import HTTP_STATUS, ChatdError, Failure


def error_classes() -> list[type[ChatdError]]:
    """ChatdError and every subclass in chatd.exceptions."""
    found, todo = [], [ChatdError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == exceptions.__name__:
            found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", error_classes(), ids=lambda cls: cls.__name__)
def test_every_code_has_a_status_and_a_class_to_raise(cls: type[ChatdError]) -> None:
    """A Failure of the class's code comes back as an exception with that code."""
    assert cls.code in HTTP_STATUS
    raised = Failure(cls.code, "words", retry_after_ms=5, detail="for operators").exception()
    assert raised.code == cls.code and isinstance(raised, ChatdError)
    assert (raised.message, raised.retry_after_ms, raised.detail) == ("words", 5, "for operators")
    assert Failure.of(raised) == Failure(cls.code, "words", 5, "for operators")
