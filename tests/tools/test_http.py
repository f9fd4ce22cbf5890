"""Declarative HTTP tools against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import orjson
import pytest
import trio

from chatd.config.settings import HTTPToolSettings, ToolsSettings
from chatd.exceptions import ConfigError, ToolFailed
from chatd.llm.types import ToolCall
from chatd.tools import HTTPTool, Tool, ToolContext, ToolRegistry, http_tools
from chatd.tools.http import MAX_CONTENT_CHARS

from .conftest import EchoServer

CONTEXT = ToolContext(request_id="req-1")
GUARD_S = 5


def settings(url: str, **kwargs: Any) -> HTTPToolSettings:
    properties = {
        name: {"type": "string"} for name in ["city", "days", "kind", "title", "token", "q"]
    }
    return HTTPToolSettings(
        name=kwargs.pop("name", "weather"),
        description="Weather by city.",
        url=url,
        parameters={"type": "object", "properties": properties},
        **kwargs,
    )


async def run(tool: HTTPTool, arguments: dict[str, Any]) -> Any:
    with trio.fail_after(GUARD_S):
        result = await tool.execute(arguments, CONTEXT)
    return orjson.loads(result.content)


async def test_get_fills_the_path_and_puts_the_rest_in_the_query(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """GET: {city} is URL-quoted into the path; other arguments join the URL's own query."""
    tool = HTTPTool.of(
        settings(f"{echo_server.base_url}/weather/{{city}}?units=metric"), http_client
    )
    seen = await run(tool, {"city": "São Paulo/Centro", "days": 3, "q": ["a", "b"]})
    assert seen["method"] == "GET"
    assert seen["target"] == "/weather/S%C3%A3o%20Paulo%2FCentro?units=metric&days=3&q=a&q=b"
    assert seen["body"] == ""


async def test_the_urls_own_query_is_kept_without_arguments(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """With no arguments left over, the URL's own query string goes out untouched."""
    tool = HTTPTool.of(settings(f"{echo_server.base_url}/w/{{city}}?units=metric"), http_client)
    seen = await run(tool, {"city": "Oslo"})
    assert seen["target"] == "/w/Oslo?units=metric"


async def test_delete_sends_arguments_in_the_query(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """DELETE, like GET, has no body: arguments go to the query string."""
    tool = HTTPTool.of(
        settings(f"{echo_server.base_url}/items/{{kind}}", method="DELETE"), http_client
    )
    seen = await run(tool, {"kind": "book", "title": "Dune", "flag": True})
    assert seen["method"] == "DELETE"
    assert seen["target"] == "/items/book?title=Dune&flag=true"


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_post_and_put_send_a_json_body(
    echo_server: EchoServer, http_client: httpx.AsyncClient, method: str
) -> None:
    """POST/PUT: arguments not used in the URL are the JSON body, nothing in the query."""
    tool = HTTPTool.of(
        settings(f"{echo_server.base_url}/items/{{kind}}", method=method), http_client
    )
    seen = await run(tool, {"kind": "book", "title": "Dune", "tags": ["sf"], "year": 1965})
    assert seen["method"] == method and seen["target"] == "/items/book"
    assert seen["headers"]["content-type"] == "application/json"
    assert orjson.loads(seen["body"]) == {"title": "Dune", "tags": ["sf"], "year": 1965}


async def test_headers_are_templated_and_their_arguments_stay_out_of_the_query(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """A {token} in a header value is filled (quoted, so it stays one line) and not sent twice."""
    tool = HTTPTool.of(
        settings(
            f"{echo_server.base_url}/me",
            headers={"Authorization": "Bearer {token}", "X-Fixed": "yes"},
        ),
        http_client,
    )
    seen = await run(tool, {"token": "s3cret\r\nX-Evil: 1", "q": "x"})
    assert seen["headers"]["authorization"] == "Bearer s3cret%0D%0AX-Evil%3A%201"
    assert seen["headers"]["x-fixed"] == "yes" and "x-evil" not in seen["headers"]
    assert seen["target"] == "/me?q=x"


async def test_a_missing_templated_argument_fails_in_words(http_client: httpx.AsyncClient) -> None:
    """A URL placeholder without its argument is a ToolFailed, before any request."""
    tool = HTTPTool.of(settings("http://127.0.0.1:9/weather/{city}"), http_client)
    with pytest.raises(ToolFailed, match="the argument 'city' is required"):
        await tool.execute({}, CONTEXT)


async def test_not_found_is_a_tool_failure_with_the_body(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """A 404 becomes ToolFailed('HTTP 404: <start of body>'), whitespace tidied."""
    tool = HTTPTool.of(settings(f"{echo_server.base_url}/status/404"), http_client)
    with trio.fail_after(GUARD_S), pytest.raises(ToolFailed) as caught:
        await tool.execute({}, CONTEXT)
    assert caught.value.message == "HTTP 404: no such thing here"


async def test_a_long_body_is_truncated_with_a_note(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """The content is at most 4000 characters of body, plus a note that more was cut."""
    tool = HTTPTool.of(settings(f"{echo_server.base_url}/big"), http_client)
    with trio.fail_after(GUARD_S):
        result = await tool.execute({}, CONTEXT)
    body, note = result.content.split("\n")
    assert body == "x" * MAX_CONTENT_CHARS
    assert note == "[response truncated to its first 4000 characters]"


async def test_a_server_that_does_not_answer_times_out(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """A server that never answers is a ToolFailed after the tool's own timeout."""
    tool = HTTPTool.of(settings(f"{echo_server.base_url}/sleep", timeout_s=0.2), http_client)
    with trio.fail_after(GUARD_S), pytest.raises(ToolFailed) as caught:
        await tool.execute({}, CONTEXT)
    assert caught.value.message == "127.0.0.1 did not answer within 0.2 s"


async def test_connection_refused_is_a_tool_failure(http_client: httpx.AsyncClient) -> None:
    """Nothing listening is a ToolFailed naming the host; no httpx exception escapes."""
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = HTTPTool.of(settings(f"http://127.0.0.1:{port}/x"), http_client)
    with trio.fail_after(GUARD_S), pytest.raises(ToolFailed) as caught:
        await tool.execute({}, CONTEXT)
    assert caught.value.message.startswith("could not connect to 127.0.0.1: ")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_through_the_registry_with_its_timeout(
    echo_server: EchoServer, http_client: httpx.AsyncClient
) -> None:
    """In a registry the tool's configured timeout is used, and failures are outcomes."""
    tools = ToolRegistry(
        http_tools(
            ToolsSettings(
                http=[
                    settings(f"{echo_server.base_url}/w/{{city}}"),
                    settings(f"{echo_server.base_url}/sleep", name="slow", timeout_s=0.2),
                ]
            ),
            http_client,
        )
    )
    with trio.fail_after(GUARD_S):
        ok, slow = await tools.run_all(
            [
                ToolCall(id="a", name="weather", arguments='{"city": "Oslo"}'),
                ToolCall(id="b", name="slow", arguments="{}"),
            ],
            CONTEXT,
        )
    assert ok.ok and orjson.loads(ok.content)["target"] == "/w/Oslo"
    assert not slow.ok and slow.error is not None and "0.2 s" in slow.error
    assert sorted(request.target for request in echo_server.seen) == ["/sleep", "/w/Oslo"]


async def test_settings_become_tool_properties(http_client: httpx.AsyncClient) -> None:
    """Name, description, schema, flags and timeout come from the settings."""
    tool = HTTPTool.of(
        settings("http://example.test/{city}", timeout_s=3, time_bound=True, user_bound=True),
        http_client,
    )
    assert isinstance(tool, Tool)
    assert (tool.name, tool.description, tool.timeout_s) == ("weather", "Weather by city.", 3)
    assert tool.parameters["properties"]["city"] == {"type": "string"}
    assert tool.time_bound and tool.user_bound and not tool.natural_answer


async def test_an_undeclared_placeholder_is_a_config_error(http_client: httpx.AsyncClient) -> None:
    """A {name} the schema does not declare could never be filled: refused at start-up."""
    with pytest.raises(ConfigError, match=r"uses \{unit\}, but parameters.properties has no"):
        HTTPTool.of(settings("http://example.test/{city}", headers={"X": "{unit}"}), http_client)
