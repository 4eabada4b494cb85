"""bakery.auth: tokens from the settings with their roles and owners, and checks that read
without writing."""

from __future__ import annotations

import dataclasses

import peewee as pw

from bakery import auth
from bakery.models import ApiToken


def settings_with(settings, tokens):
    return dataclasses.replace(settings, api_tokens=tokens)


def test_a_token_given_by_value_is_the_directors_and_a_full_one_says_all(fleet, settings):
    auth.import_configured_tokens(
        settings_with(
            settings,
            {
                "director": "d" * 40,
                "ops": {"token": "o" * 40, "role": "operator", "owner": "rack-team"},
            },
        )
    )
    director, ops = ApiToken.get(name="director"), ApiToken.get(name="ops")
    assert (director.role, director.owner, director.configured) == ("cpi", "director", True)
    assert (ops.role, ops.owner) == ("operator", "rack-team")
    assert auth.verify_token("o" * 40).name == "ops"


def test_a_token_left_out_of_the_settings_goes_but_made_ones_stay(fleet, settings):
    auth.create_token("made-by-hand", role="viewer")
    auth.import_configured_tokens(settings_with(settings, {"old": "x" * 40}))
    auth.import_configured_tokens(settings_with(settings, {}))
    assert {t.name for t in ApiToken.select()} == {"made-by-hand"}
    assert auth.verify_token("x" * 40) is None


def test_checking_a_token_writes_its_last_use_at_most_once_a_minute(fleet, monkeypatch):
    _, token = auth.create_token("reader", role="viewer")
    writes = []
    real_update = ApiToken.update

    def counted(*args, **kwargs):
        writes.append(kwargs)
        return real_update(*args, **kwargs)

    monkeypatch.setattr(ApiToken, "update", counted)
    for _ in range(5):
        assert auth.verify_token(token).name == "reader"
    assert len(writes) == 1


def test_a_token_is_valid_when_its_last_use_cannot_be_written(fleet, monkeypatch):
    """A full disk made every request fail, reads included: the check wrote each time."""
    _, token = auth.create_token("reader", role="viewer")

    def disk_full(*_args, **_kwargs):
        raise pw.OperationalError("database or disk is full")

    monkeypatch.setattr(ApiToken, "update", disk_full)
    assert auth.verify_token(token).name == "reader"
