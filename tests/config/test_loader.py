"""Loading settings: file, environment and flags; bad values name the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatd.config import Settings, env_keys, load_settings
from chatd.exceptions import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatd.toml"
    path.write_text(text)
    return path


def load_error(path: Path | None = None, *, env: dict[str, str]) -> str:
    """The message that loading ``path`` and ``env`` stops with."""
    with pytest.raises(ConfigError) as info:
        load_settings(path, env=env)
    return str(info.value)


def test_defaults_need_nothing() -> None:
    """With no file and no environment, the embedded defaults load."""
    settings = load_settings(env={})
    assert settings == Settings()
    assert settings.llm.url is None
    assert settings.kb.backend == "sqlite"
    assert settings.redis.url is None


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    """Later sources win: flags over environment over the file."""
    path = write(tmp_path, '[server]\nport = 1000\nhost = "0.0.0.0"\n[limits]\nllm_streams = 7\n')
    settings = load_settings(
        path,
        env={"CHATD_SERVER_PORT": "2000", "CHATD_LIMITS_LLM_STREAMS": "9"},
        overrides={"server.port": 3000, "server.host": None},
    )
    assert settings.server.port == 3000
    assert settings.server.host == "0.0.0.0"
    assert settings.limits.llm_streams == 9


def test_env_names_follow_key_paths() -> None:
    """``llm.url`` is CHATD_LLM_URL; nested tables join with underscores."""
    keys = env_keys()
    assert keys["CHATD_LLM_URL"] == ("llm", "url")
    assert keys["CHATD_LIMITS_LLM_STREAMS"] == ("limits", "llm_streams")
    assert keys["CHATD_LLM_TIMEOUTS_TTFT_S"] == ("llm", "timeouts", "ttft_s")


def test_env_scalars_are_parsed() -> None:
    """Strings from the environment become ints, floats, bools and tables."""
    settings = load_settings(
        env={
            "CHATD_LIMITS_QUEUE_TIMEOUT_S": "2.5",
            "CHATD_LOG_INCLUDE_TEXT": "yes",
            "CHATD_LLM_EXTRA_HEADERS": '{"x-team": "chat"}',
            "CHATD_LLM_URL": "http://127.0.0.1:9/v1",
            "CHATD_REDIS_URL": "",
            "CHATD_TEST_ARANGO_URL": "ignored: not a settings key",
        }
    )
    assert settings.limits.queue_timeout_s == 2.5
    assert settings.log.include_text is True
    assert settings.llm.extra_headers == {"x-team": "chat"}
    assert settings.llm.url == "http://127.0.0.1:9/v1"
    assert settings.redis.url is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CHATD_LIMITS_LLM_STREAMS": "many"},
            "config: limits.llm_streams = 'many' (from environment CHATD_LIMITS_LLM_STREAMS): "
            "expected an integer",
        ),
        (
            {"CHATD_LIMITS_PREPARE": "0"},
            "config: limits.prepare = 0 (from environment CHATD_LIMITS_PREPARE): "
            "expected a number greater than 0",
        ),
        (
            {"CHATD_LLM_URL": "ftp://x"},
            "config: llm.url = 'ftp://x' (from environment CHATD_LLM_URL): "
            "expected an http:// or https:// URL",
        ),
        (
            {"CHATD_KB_BACKEND": "mysql"},
            "config: kb.backend = 'mysql' (from environment CHATD_KB_BACKEND): "
            "expected one of 'sqlite', 'arango'",
        ),
        (
            {"CHATD_LOG_INCLUDE_TEXT": "perhaps"},
            "config: log.include_text = 'perhaps' (from environment CHATD_LOG_INCLUDE_TEXT): "
            "expected true or false",
        ),
        (
            {"CHATD_LLM_TIMEOUTS_GAP_S": "soon"},
            "config: llm.timeouts.gap_s = 'soon' (from environment CHATD_LLM_TIMEOUTS_GAP_S): "
            "expected a number",
        ),
        (
            {"CHATD_LLM_EXTRA_HEADERS": "[1]"},
            "config: llm.extra_headers = *** (from environment CHATD_LLM_EXTRA_HEADERS): "
            "expected a table of strings (a JSON object in the environment)",
        ),
        (
            {"CHATD_SERVER_WORKERS": "many"},
            "config: server.workers = 'many' (from environment CHATD_SERVER_WORKERS): "
            "expected an integer or one of 'auto'",
        ),
        (
            {"CHATD_SERVER_WORKERS": "0"},
            "config: server.workers = 0 (from environment CHATD_SERVER_WORKERS): "
            'expected a number greater than 0, or "auto"',
        ),
        (
            {"CHATD_REDIS_URL": "http://x"},
            "config: redis.url = 'http://x' (from environment CHATD_REDIS_URL): "
            "expected a redis:// URL",
        ),
    ],
)
def test_bad_env_value_names_key_value_and_expectation(env: dict[str, str], message: str) -> None:
    """Each bad value stops loading with one line: key, value, source, expectation."""
    error = load_error(env=env)
    assert error == message
    assert "\n" not in error


@pytest.mark.parametrize(("value", "count"), [("3", 3), ("auto", len(os.sched_getaffinity(0)))])
def test_workers_is_a_number_or_auto(value: str, count: int) -> None:
    """``server.workers``: a count, or ``auto`` for one per core this process may use."""
    settings = load_settings(env={"CHATD_SERVER_WORKERS": value})
    assert settings.server.worker_count == count


def test_bad_file_value(tmp_path: Path) -> None:
    """A float where an integer belongs is refused, not truncated."""
    path = write(tmp_path, "[limits]\nllm_streams = 5.5\n")
    with pytest.raises(ConfigError, match=r"limits.llm_streams = 5.5 \(from .*chatd.toml\)"):
        load_settings(path, env={})


def test_wrong_type_in_file(tmp_path: Path) -> None:
    """A number where a string belongs is refused."""
    path = write(tmp_path, "[llm]\nmodel = 5\n")
    with pytest.raises(ConfigError, match=r"llm\.model = 5 .*expected a string"):
        load_settings(path, env={})


def test_unknown_key_lists_the_known_ones(tmp_path: Path) -> None:
    """A typo names the key and the keys that table has."""
    path = write(tmp_path, "[limits]\nllm_stream = 5\n")
    assert load_error(path, env={}).startswith(
        "config: unknown key limits.llm_stream: expected one of prepare, llm_streams"
    )


def test_flag_value_is_checked() -> None:
    """A bad flag value says it came from the command line."""
    with pytest.raises(ConfigError, match=r"server.port = 70000 \(from the command line\)"):
        load_settings(env={}, overrides={"server.port": 70000})


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    """A missing file or broken TOML is one clear line too."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(write(tmp_path, "[server\n"), env={})


def test_http_tools_from_file_and_env(tmp_path: Path) -> None:
    """Declarative HTTP tools load from ``[[tools.http]]`` or as JSON from the environment."""
    path = write(
        tmp_path,
        '[[tools.http]]\nname = "weather"\ndescription = "Weather for a city"\n'
        'url = "https://wx.example/v1/{city}"\n'
        'parameters = {type = "object", properties = {city = {type = "string"}}}\n',
    )
    tool = load_settings(path, env={}).tools.http[0]
    assert (tool.name, tool.method, tool.url) == ("weather", "GET", "https://wx.example/v1/{city}")
    assert tool.parameters["properties"] == {"city": {"type": "string"}}
    env = {"CHATD_TOOLS_HTTP": '[{"name": "a", "description": "b", "url": "http://h/x"}]'}
    assert load_settings(env=env).tools.http[0].name == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[tools.http]]\nname = "w"\nurl = "http://x"\n',
            "config: tools.http[0].description is missing: expected a string",
        ),
        (
            '[[tools.http]]\nname = "w"\ndescription = "d"\nurl = "http://x"\n'
            '[[tools.http]]\nname = "v"\ndescription = "d"\nurl = "x"\n',
            "config: tools.http[1].url = 'x' (from ",
        ),
    ],
)
def test_bad_http_tool_names_its_index(tmp_path: Path, text: str, message: str) -> None:
    """An error inside a list of tables names the item by index."""
    assert load_error(write(tmp_path, text), env={}).startswith(message)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CHATD_LLM_URL": "ftp://svc:hunter2pass@llm/v1"},
            "config: llm.url = 'ftp://svc:***@llm/v1' (from environment CHATD_LLM_URL): "
            "expected an http:// or https:// URL",
        ),
        (
            {"CHATD_SERVER_API_KEYS": "sk-not-a-list-123"},
            "config: server.api_keys = *** (from environment CHATD_SERVER_API_KEYS): "
            "expected a list (JSON in the environment)",
        ),
    ],
)
def test_config_errors_never_print_secrets(env: dict[str, str], message: str) -> None:
    """A bad key, password or URL with credentials is named, its secret not shown."""
    assert load_error(env=env) == message


def test_an_unknown_chatd_variable_names_the_closest_setting() -> None:
    assert load_error(env={"CHATD_LIMITS_LLM_STREEMZ": "5"}) == (
        "config: unknown environment variable CHATD_LIMITS_LLM_STREEMZ: "
        "did you mean CHATD_LIMITS_LLM_STREAMS?"
    )
    with pytest.raises(ConfigError, match="CHATD_NONSENSE: no setting has that name"):
        load_settings(env={"CHATD_NONSENSE": "1"})


def test_variables_that_are_not_settings_pass() -> None:
    env = {"CHATD_INHERIT_WORKER": "1", "CHATD_TEST_ARANGO_URL": "x", "CHATD_FUZZ_SEED": "3"}
    assert load_settings(env={**env, "OTHER_THING": "1"}).limits.llm_streams > 0
