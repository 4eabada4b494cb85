"""The dashboard through Flask's test client: a browser that signs in with a token and
posts forms with the CSRF token of the page it read."""

from __future__ import annotations

import re

import pytest

from bakery import auth, models

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    """A test client that remembers the CSRF token of the last page it read."""

    def __init__(self, client) -> None:
        self.client = client
        self.csrf = ""

    def get(self, path: str, **kwargs):
        response = self.client.get(path, **kwargs)
        found = CSRF.search(response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path: str, data: dict | None = None, *, csrf: bool = True, **kwargs):
        fields = dict(data or {})
        if csrf:
            fields["csrf_token"] = self.csrf
        return self.client.post(path, data=fields, **kwargs)

    def sign_in(self, token: str, next_page: str | None = None):
        self.get("/sign-in")
        path = "/sign-in" + (f"?next={next_page}" if next_page else "")
        return self.post(path, {"token": token})


def make_token(name: str, role: str) -> str:
    with models.database.connection_context():
        _, token = auth.create_token(name, role=role)
    return token


@pytest.fixture
def fleet(app):
    """The fleet, without a connection held open around the test: each page request
    closes the thread's connection at its end, and the fleet's next query opens one."""
    return app.extensions["bakery.fleet"]


@pytest.fixture
def browser(app) -> Browser:
    return Browser(app.test_client())


@pytest.fixture
def admin(browser, admin_token) -> Browser:
    """A browser signed in with an admin token."""
    assert browser.sign_in(admin_token).status_code == 302
    return browser


@pytest.fixture
def viewer(app) -> Browser:
    """A browser signed in with a viewer token."""
    browser = Browser(app.test_client())
    assert browser.sign_in(make_token("watcher", "viewer")).status_code == 302
    return browser
