"""Unit tests of roammail.core.locations: `~` and the XDG base directories."""

from __future__ import annotations

import pytest

from roammail.core import locations


@pytest.fixture
def home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    return str(tmp_path)


def test_the_defaults_are_the_specs_under_home(home):
    assert locations.xdg_config_home() == f"{home}/.config"
    assert locations.xdg_state_home() == f"{home}/.local/state"
    assert locations.xdg_cache_home() == f"{home}/.cache"
    assert locations.xdg_runtime_dir() is None


@pytest.mark.parametrize("name,function", [
    ("XDG_CONFIG_HOME", locations.xdg_config_home),
    ("XDG_STATE_HOME", locations.xdg_state_home),
    ("XDG_CACHE_HOME", locations.xdg_cache_home),
    ("XDG_RUNTIME_DIR", locations.xdg_runtime_dir),
])
def test_an_absolute_value_wins_and_a_relative_or_empty_one_is_ignored(home, monkeypatch,
                                                                        name, function):
    default = function()
    monkeypatch.setenv(name, "/x/y")
    assert function() == "/x/y"
    for ignored in ("", "relative/dir", "~/dir"):
        monkeypatch.setenv(name, ignored)
        assert function() == default


def test_an_environment_of_the_callers_own(home, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", "/from/process")
    assert locations.xdg_cache_home({}) == f"{home}/.cache"
    assert locations.xdg_cache_home({"XDG_CACHE_HOME": "/given"}) == "/given"
    assert locations.xdg_runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7"
    assert locations.xdg_env("XDG_CACHE_HOME") == "/from/process"
    assert locations.xdg_env("XDG_CACHE_HOME", {"XDG_CACHE_HOME": "rel"}) is None


def test_home_expands_only_a_leading_tilde(home):
    assert locations.expand_home("~") == home
    assert locations.expand_home("~/a") == f"{home}/a"
    assert locations.expand_home("a/~") == "a/~"
