"""Loading settings: one TOML file, then ``CHATD_*`` variables, then CLI flags.

Later sources win. cattrs structures the merged tree into :class:`Settings`
with strict scalar hooks (``"5"`` from the environment is an int, ``5.5`` in
the file is not), and any failure becomes one :class:`ConfigError` line that
names the key, the value, where it came from and what was expected.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import orjson
from cattrs.errors import (
    AttributeValidationNote,
    ForbiddenExtraKeysError,
    IterableValidationNote,
)

from chatd.config.settings import InvalidSetting, Settings
from chatd.exceptions import ConfigError
from chatd.redaction import MASK, redact

__all__ = ["ENV_PREFIX", "env_keys", "load_settings"]

ENV_PREFIX = "CHATD_"
_INT = re.compile(r"[+-]?\d+")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

KeyPath = tuple[str, ...]


def _strict_int(value: object, _type: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    raise ValueError(value)


def _strict_float(value: object, _type: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(value)


def _strict_bool(value: object, _type: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(value)


def _strict_str(value: object, _type: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(value)


def _str_table(value: object, _type: object) -> dict[str, str]:
    if isinstance(value, str):  # from the environment: a JSON object
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(value) from exc
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    raise ValueError(value)


def _is_json_leaf(tp: Any) -> bool:
    """Lists and tables of tables: set from the environment as JSON text."""
    return typing.get_origin(tp) in (list, dict) and tp != dict[str, str]


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(float, _strict_float)
    conv.register_structure_hook(bool, _strict_bool)
    conv.register_structure_hook(str, _strict_str)
    conv.register_structure_hook_func(lambda tp: tp == dict[str, str], _str_table)

    def json_leaf(tp: Any) -> Any:
        origin, args = typing.get_origin(tp), typing.get_args(tp)

        def structure(value: object, _type: object) -> Any:
            if isinstance(value, str):  # from the environment
                try:
                    value = orjson.loads(value)
                except orjson.JSONDecodeError as exc:
                    raise ValueError(value) from exc
            if origin is dict:
                if not isinstance(value, dict):
                    raise ValueError(value)
                return {k: conv.structure(v, args[1]) for k, v in value.items()}
            if not isinstance(value, list):
                raise ValueError(value)
            items, errors = [], []
            for index, item in enumerate(value):
                try:
                    items.append(conv.structure(item, args[0]))
                except Exception as exc:  # collected, re-raised as one group
                    exc.add_note(IterableValidationNote(f"item {index}", index, args[0]))
                    errors.append(exc)
            if errors:
                raise cattrs.IterableValidationError("bad list items", errors, tp)
            return items

        return structure

    conv.register_structure_hook_factory(_is_json_leaf, json_leaf)

    def count_or_auto(value: object, _type: object) -> int | str:
        return "auto" if value == "auto" else _strict_int(value, int)

    conv.register_structure_hook(int | Literal["auto"], count_or_auto)
    return conv


_converter = _make_converter()


def _leaf_fields(cls: type, prefix: KeyPath = ()) -> Iterator[tuple[KeyPath, Any]]:
    """Every settable key of ``cls`` with its type, nested tables flattened."""
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        tp = hints[field.name]
        if attrs.has(tp):
            yield from _leaf_fields(tp, (*prefix, field.name))
        else:
            yield (*prefix, field.name), tp


def env_keys() -> dict[str, KeyPath]:
    """Environment variable name -> key path, e.g. CHATD_LLM_URL -> (llm, url)."""
    return {ENV_PREFIX + "_".join(path).upper(): path for path, _tp in _leaf_fields(Settings)}


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` should look like, for people."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if tp == dict[str, str]:
        return "a table of strings (a JSON object in the environment)"
    if origin is dict:
        return "a table"
    if origin is list:
        return "a list (JSON in the environment)"
    if attrs.has(tp):
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _set(tree: dict[str, Any], path: KeyPath, value: object) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config: {'.'.join(path)}: {key} is not a table")
        tree = node
    tree[path[-1]] = value


def _get(tree: Mapping[str, Any], path: KeyPath) -> object:
    node: object = tree
    for key in path:
        if key.startswith("[") and isinstance(node, list):
            index = int(key[1:-1])
            node = node[index] if index < len(node) else None
        elif isinstance(node, Mapping) and key in node:
            node = node[key]
        else:
            return None
    return node


def _failures(
    exc: BaseException, path: KeyPath, tp: Any
) -> Iterator[tuple[KeyPath, Any, BaseException]]:
    """Flatten cattrs' exception groups into (key path, expected type, error)."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            sub_path, sub_tp = path, tp
            for note in getattr(sub, "__notes__", []):
                if isinstance(note, AttributeValidationNote):
                    sub_path, sub_tp = (*path, note.name), note.type
                elif isinstance(note, IterableValidationNote):
                    sub_path, sub_tp = (*path, f"[{note.index}]"), note.type
            yield from _failures(sub, sub_path, sub_tp)
    else:
        yield path, tp, exc


def _message(raw: Mapping[str, Any], sources: Mapping[KeyPath, str], exc: BaseException) -> str:
    path, tp, err = next(_failures(exc, (), Settings))
    if isinstance(err, ForbiddenExtraKeysError):
        keys = ", ".join(".".join((*path, k)).replace(".[", "[") for k in sorted(err.extra_fields))
        known = ", ".join(f.name for f in attrs.fields(tp)) if attrs.has(tp) else "none"
        return f"config: unknown key {keys}: expected one of {known}"
    if isinstance(err, InvalidSetting):
        path = (*path, err.name) if path[-1:] != (err.name,) else path
        value, expected = err.value, err.expected
    elif isinstance(err, KeyError):
        key = ".".join(path).replace(".[", "[")
        return f"config: {key} is missing: expected {_describe(tp)}"
    else:
        value, expected = _get(raw, path), _describe(tp)
        if value is None and isinstance(err, ValueError) and err.args:
            value = err.args[0]  # inside a list from the environment: the hook saw it
    where = next((sources[path[:i]] for i in range(len(path), 0, -1) if path[:i] in sources), None)
    origin = f" (from {where})" if where else ""
    key = ".".join(path).replace(".[", "[")
    shown = MASK if _SECRET_KEYS & set(path) else redact(repr(value))
    return f"config: {key} = {shown}{origin}: expected {expected}"


_SECRET_KEYS = {"api_key", "api_keys", "arango_password", "extra_headers", "headers"}
"""Keys whose values a config error never prints (URLs lose their passwords)."""


NOT_SETTINGS = ("CHATD_INHERIT_WORKER", "CHATD_ARGS", "CHATD_TEST_", "CHATD_FUZZ_", "CHATD_CHAOS_")
"""``CHATD_*`` variables that are not settings: the workers' supervisor's, and
the test suite's and benchmarks' own (a name, or a prefix ending in ``_``)."""


def _check_env_names(env: Mapping[str, str]) -> None:
    """An unknown ``CHATD_*`` variable is a typo until shown otherwise: refuse
    it, naming the closest setting (as an unknown TOML key is refused)."""
    keys = env_keys()
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in keys:
            continue
        if any(name == n or (n.endswith("_") and name.startswith(n)) for n in NOT_SETTINGS):
            continue
        bare = {key.removeprefix(ENV_PREFIX): key for key in keys}
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), bare, n=1, cutoff=0.6)
        hint = f"did you mean {bare[close[0]]}?" if close else "no setting has that name"
        raise ConfigError(f"config: unknown environment variable {name}: {hint}")


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Settings:
    """Read the TOML file, then ``CHATD_*`` variables, then ``overrides``.

    ``overrides`` maps dotted keys (``"server.port"``) to values, for CLI flags;
    ``None`` values are ignored so unset flags do not override anything.
    Raises :class:`ConfigError` with one line naming the bad key.
    """
    raw: dict[str, Any] = {}
    sources: dict[KeyPath, str] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config: {path} is not valid TOML: {exc}") from exc
        for key_path, _tp in _leaf_fields(Settings):
            if _get(raw, key_path) is not None:
                sources[key_path] = str(path)
    env = os.environ if env is None else env
    _check_env_names(env)
    for name, key_path in env_keys().items():
        if name in env:
            _set(raw, key_path, env[name] if env[name] != "" else None)
            sources[key_path] = f"environment {name}"
    for dotted, value in (overrides or {}).items():
        if value is not None:
            key_path = tuple(dotted.split("."))
            _set(raw, key_path, value)
            sources[key_path] = "the command line"
    try:
        return _converter.structure(raw, Settings)
    except (cattrs.BaseValidationError, InvalidSetting) as exc:
        raise ConfigError(_message(raw, sources, exc)) from exc
