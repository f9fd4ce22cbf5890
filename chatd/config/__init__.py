"""Configuration: the settings tree and how it is loaded (protocol.md §4).

Owns :class:`Settings` and :func:`load_settings`. Imports nothing of chatd but
``chatd.exceptions``; every other part receives its settings from here.
"""

from chatd.config.loader import ENV_PREFIX, env_keys, load_settings
from chatd.config.settings import (
    BreakerSettings,
    BreakersSettings,
    CacheSettings,
    FlightsSettings,
    HTTPToolSettings,
    InvalidSetting,
    JanitorSettings,
    KBSettings,
    LimitsSettings,
    LLMFallbackSettings,
    LLMSettings,
    LLMTimeouts,
    LogSettings,
    RedisSettings,
    ServerSettings,
    Settings,
    SimSettings,
    ToolsSettings,
)

__all__ = [
    "ENV_PREFIX",
    "BreakerSettings",
    "BreakersSettings",
    "CacheSettings",
    "FlightsSettings",
    "HTTPToolSettings",
    "InvalidSetting",
    "JanitorSettings",
    "KBSettings",
    "LLMFallbackSettings",
    "LLMSettings",
    "LLMTimeouts",
    "LimitsSettings",
    "LogSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "SimSettings",
    "ToolsSettings",
    "env_keys",
    "load_settings",
]
