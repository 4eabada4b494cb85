"""The dashboard's pages and forms: sign-in with a token, CSRF on every form, roles
deciding what a token sees and may do, and what a Pi put on its timeline shown as text."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import timedelta

import pytest

from bakery import auth, models
from bakery.fleet.netboot import FleetBootSource
from bakery.models import Bake, Event, Pi, utcnow
from bakery.web import stream

from .conftest import Browser, make_token


def page(response) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def flashed(browser: Browser, response) -> str:
    """Follow a form's redirect; the page it lands on, with its message."""
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return page(browser.get(response.headers["Location"]))


def test_every_page_sends_a_browser_without_a_session_to_sign_in(browser):
    for path in ("/", "/pis/00000001", "/bakeforms", "/bakes", "/disks"):
        response = browser.get(path)
        assert response.status_code == 302
        assert response.headers["Location"] == f"/sign-in?next={path}"


def test_a_wrong_token_gets_the_sign_in_page_again(browser, admin_token):
    response = browser.sign_in("bky_" + "x" * 43)

    assert response.status_code == 401
    assert "invalid or revoked token" in response.get_data(as_text=True)
    assert browser.get("/").status_code == 302  # still not signed in


def test_signing_in_goes_where_it_was_headed_and_never_off_the_site(browser, admin_token, fleet):
    fleet.register_pi("00000001")
    assert browser.sign_in(admin_token, "/pis/00000001").headers["Location"] == "/pis/00000001"
    for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "pis"):
        other = Browser(browser.client.application.test_client())
        assert other.sign_in(admin_token, elsewhere).headers["Location"] == "/"


def test_the_session_cookie_holds_no_token_and_scripts_cannot_read_it(browser, admin_token):
    response = browser.sign_in(admin_token)

    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("bakery_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert admin_token not in cookie
    assert admin_token[4:20] not in browser.client.get_cookie("bakery_session").value


def test_pages_allow_no_script_or_style_from_anywhere_else(admin):
    response = admin.get("/")

    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert 'src="/static/bakery.js"' in page(response)
    for asset in ("bakery.js", "bakery.css"):
        text = admin.get(f"/static/{asset}").get_data(as_text=True)
        assert "http://" not in text and "https://" not in text and "innerHTML" not in text


def test_a_form_without_the_sessions_csrf_token_is_refused_and_does_nothing(admin, fleet):
    fleet.register_pi("00000001")
    admin.get("/pis/00000001")
    before = Event.select().count()

    refused = admin.post("/pis/00000001/power", {"action": "on"}, csrf=False)
    forged = admin.client.post(
        "/pis/00000001/power", data={"action": "on", "csrf_token": "forged" * 8}
    )

    for response in (refused, forged):
        assert response.status_code == 403
        assert "reload the page" in response.get_data(as_text=True)
        assert "Traceback" not in response.get_data(as_text=True)
    assert Event.select().count() == before


def test_signing_in_needs_the_sign_in_pages_csrf_token_too(browser, admin_token):
    """Another site cannot sign a browser in as its own token (login CSRF)."""
    response = browser.client.post("/sign-in", data={"token": admin_token})

    assert response.status_code == 403
    assert browser.get("/").status_code == 302


def test_revoking_a_token_ends_its_sessions_at_once(admin, admin_token):
    assert admin.get("/").status_code == 200
    with models.database.connection_context():
        auth.revoke_token("test-admin")

    assert admin.get("/").status_code == 302


def test_signing_out_ends_the_session(admin):
    admin.get("/")
    assert admin.post("/sign-out").status_code == 302
    assert admin.get("/").status_code == 302


def test_the_fleet_grid_shows_each_pi_with_its_state_power_and_bake(admin, bake_pi, fleet):
    bake = bake_pi(model="4B")
    fleet.register_pi("00000002", model="5")
    five_minutes_ago = utcnow() - timedelta(minutes=5, seconds=10)
    Pi.update(power_state="on", last_seen=five_minutes_ago).where(Pi.serial == "00000001").execute()

    html = page(admin.get("/"))

    assert '<li class="pi state-baked boot-booting" data-serial="00000001">' in html
    assert '<li class="pi state-available" data-serial="00000002">' in html
    assert "raspios" in html and "Pi 4B" in html and "Pi 5" in html
    assert "1 available" in html and "1 baked" in html
    baked, free = tile(html, "00000001"), tile(html, "00000002")
    assert '<span class="power">power on</span>' in baked
    assert '<span class="seen">seen 5 min ago</span>' in baked
    assert '<span class="power">power unknown</span>' in free
    assert '<span class="seen">seen never</span>' in free
    assert bake.id not in free


def tile(html: str, serial: str) -> str:
    """The fleet grid's tile of one Pi."""
    return html.split(f'data-serial="{serial}">', 1)[1].split("</li>", 1)[0]


def test_a_pis_page_shows_its_bootloader_log_as_text(admin, fleet):
    fleet.register_pi("00000001", ip="127.0.0.11")
    fleet.register_pi("00000002", ip="127.0.0.12")
    netconsole = FleetBootSource(fleet.context)  # what the netconsole listener files with
    assert netconsole.record_console(
        "127.0.0.11",
        [
            "RPi: BOOTLOADER release VERSION:8ba17717 DATE: 2023/01/11",
            '<script>alert("log")</script>',
            "Read start4.elf bytes  2228800 hnd 0x00000000",
        ],
    )
    assert netconsole.record_console("127.0.0.12", ["another Pi's line"])
    netconsole.close()

    html = page(admin.get("/pis/00000001"))

    log = html.split('<pre class="console" id="console">', 1)[1].split("</pre>", 1)[0]
    lines = [line.split(" ", 1)[1] for line in log.splitlines()]
    assert lines == [
        "RPi: BOOTLOADER release VERSION:8ba17717 DATE: 2023/01/11",
        "&lt;script&gt;alert(&#34;log&#34;)&lt;/script&gt;",
        "Read start4.elf bytes  2228800 hnd 0x00000000",
    ]
    assert '<script>alert("log")' not in html
    assert html.index('id="timeline"') < html.index('id="console"')


def test_a_power_button_on_a_pis_page_powers_it_and_puts_it_on_its_timeline(admin, fleet):
    fleet.register_pi("00000001")
    admin.get("/pis/00000001")

    html = flashed(
        admin, admin.post("/pis/00000001/power", {"action": "cycle", "back": "/pis/00000001"})
    )

    assert '<p class="flash ok" role="status">power cycle: unknown switch Pi 00000001' in html
    (event,) = Event.select().where(Event.kind == "power")
    assert event.pi.serial == "00000001"
    assert event.data["action"] == "cycle" and event.data["outcome"] == "ok"
    assert event.actor == "test-admin"
    assert "<td>power cycle via manual (attempt 1/3): ok" in html  # on its timeline


def test_an_admin_bakes_and_unbakes_a_pi_from_its_page(admin, fleet, raspios):
    fleet.register_pi("00000001", ip="127.0.0.11")
    html = page(admin.get("/pis/00000001"))
    assert 'id="bake"' in html and "<option>raspios</option>" in html

    baked = flashed(admin, admin.post("/pis/00000001/bake", {"bakeform": "raspios"}))

    bake = Bake.get(Bake.pi == Pi.get(Pi.serial == "00000001"))
    assert f"baked raspios onto 00000001 as bake {bake.id}" in baked
    assert "Unbake" in baked and 'id="bake"' not in baked
    unbaked = flashed(admin, admin.post(f"/bakes/{bake.id}/unbake", {"back": "/pis/00000001"}))
    assert f"unbaked {bake.id}: 00000001 is free" in unbaked
    assert Pi.get(Pi.serial == "00000001").state == "available"


def test_a_refused_action_says_why_on_the_page_and_changes_nothing(admin, fleet):
    fleet.register_pi("00000001")
    admin.get("/pis/00000001")

    html = flashed(admin, admin.post("/pis/00000001/bake", {"bakeform": "missing"}))

    assert '<p class="flash error" role="status">no bakeform named &#39;missing&#39;</p>' in html
    assert Pi.get(Pi.serial == "00000001").state == "available"
    assert Bake.select().count() == 0


def test_form_values_are_checked_by_the_apis_rules_naming_the_field(admin, fleet):
    fleet.register_pi("00000001")
    admin.get("/disks")

    not_a_number = flashed(admin, admin.post("/disks", {"size_mib": "lots"}))
    bad_mount = flashed(
        admin, admin.post("/disks", {"size_mib": "64", "filesystem": "ext4", "mount_point": "/"})
    )
    bad_action = flashed(admin, admin.post("/pis/00000001/power", {"action": "explode"}))

    assert "size_mib: not a whole number" in not_a_number
    assert "mount_point:" in bad_mount
    assert "action: Must be one of" in bad_action
    assert "No disks." in bad_mount


def test_an_admin_creates_and_deletes_a_disk(admin, fleet):
    admin.get("/disks")
    html = flashed(admin, admin.post("/disks", {"size_mib": "64"}))
    (disk,) = fleet.list_disks()
    assert f"created disk {disk.id} (64 MiB)" in html
    assert f"deleted disk {disk.id}" in flashed(admin, admin.post(f"/disks/{disk.id}/delete"))
    assert fleet.list_disks() == []


def test_a_viewer_sees_no_action_and_its_posts_are_refused(viewer, bake_pi, fleet):
    bake = bake_pi()
    for path in ("/", "/pis/00000001", "/bakeforms", "/bakes", "/disks"):
        html = page(viewer.get(path))
        assert '<form method="post" action="/' not in html.replace('action="/sign-out"', "")
        assert 'id="upload"' not in html and 'id="create-disk"' not in html

    for path, fields in (
        ("/pis/00000001/power", {"action": "off"}),
        (f"/bakes/{bake.id}/unbake", {}),
        ("/disks", {"size_mib": "64"}),
        ("/bakeforms/raspios/delete", {}),
    ):
        response = viewer.post(path, fields)
        assert response.status_code == 403, path
        assert "token watcher is viewer" in response.get_data(as_text=True)
    assert fleet.get_bake(bake.id).state == "baked"
    assert [b.name for b in fleet.list_bakeforms()] == ["raspios"]
    assert fleet.list_disks() == []


def test_an_operator_powers_pis_but_a_cpi_token_cannot_open_the_fleet(app, fleet):
    fleet.register_pi("00000001")
    operator = Browser(app.test_client())
    operator.sign_in(make_token("ops", "operator"))
    assert "Power on" in page(operator.get("/pis/00000001"))
    cpi = Browser(app.test_client())
    cpi.sign_in(make_token("director", "cpi"))

    response = cpi.get("/")

    assert response.status_code == 403
    assert "token director is cpi" in response.get_data(as_text=True)


def test_a_file_name_a_pi_asked_for_is_shown_as_text_never_as_markup(admin, fleet, short_streams):
    """An attacker on the Pi LAN chooses the file names its TFTP requests carry."""
    pi = fleet.register_pi("00000001")
    hostile = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    Event.create(pi=pi, kind="boot", message=f"no such file: {hostile}", data={"step": "missing"})

    html = page(admin.get("/pis/00000001"))

    assert hostile not in html
    assert "no such file: &lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;" in html
    stream_text = read_stream(admin, "/pis/00000001/timeline")
    (row,) = [e for e in stream_events(stream_text) if e[0] == "timeline" and "such" in e[1]]
    assert json.loads(row[1])["message"] == f"no such file: {hostile}"


def read_stream(browser: Browser, path: str, **headers) -> str:
    """The whole stream; closed after, as the server closes it (its slot is freed)."""
    response = browser.client.get(path, headers=headers)
    try:
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        return response.get_data(as_text=True)
    finally:
        response.close()


def stream_events(text: str) -> list[tuple[str, str, str | None]]:
    """(event, data, id) of each message in a server-sent event stream."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], fields["data"], fields.get("id")))
    return found


@pytest.fixture
def short_streams(monkeypatch):
    """Streams that end after one look at the database, so a test reads them whole."""
    monkeypatch.setattr(stream, "STREAM_SECONDS", 0.0)


def test_the_live_timeline_sends_what_came_after_the_last_event_seen(admin, fleet, short_streams):
    pi = fleet.register_pi("00000001")
    seen = fleet.timeline("00000001")[-1].id
    Event.create(pi=pi, kind="boot", message="start4.elf 2.2 MB in 0.21 s", data={})
    Event.create(pi=pi, kind="boot", message="cmdline.txt 162 B in 0.00 s", data={})

    messages = stream_events(
        read_stream(admin, "/pis/00000001/timeline", **{"Last-Event-ID": str(seen)})
    )

    timeline = [
        (json.loads(data)["message"], int(ident))
        for kind, data, ident in messages
        if kind == "timeline"
    ]
    assert [message for message, _ in timeline] == [
        "start4.elf 2.2 MB in 0.21 s",
        "cmdline.txt 162 B in 0.00 s",
    ]
    assert all(ident > seen for _, ident in timeline)
    (head,) = [json.loads(data) for kind, data, _ in messages if kind == "pi"]
    assert head == {"state": "available", "power_state": "unknown", "boot": None, "bake_id": None}


def test_a_worker_serves_only_so_many_live_timelines_at_once(admin, fleet, monkeypatch):
    import threading

    fleet.register_pi("00000001")
    monkeypatch.setattr(stream, "_streams", threading.BoundedSemaphore(1))
    first = admin.client.get("/pis/00000001/timeline")  # open: its body is not read yet

    refused = admin.client.get("/pis/00000001/timeline")
    first.close()
    again = admin.client.get("/pis/00000001/timeline")

    assert first.status_code == 200
    # an EventSource gives up on an error status: the busy answer asks it to come back
    assert refused.status_code == 200 and refused.mimetype == "text/event-stream"
    assert refused.get_data(as_text=True) == f"retry: {stream.BUSY_RETRY_MS}\n\n"
    assert again.status_code == 200
    again.close()


def test_the_upload_takes_the_image_as_its_body_with_the_csrf_header(admin, sd_image_file):
    admin.get("/bakeforms")
    image = sd_image_file.read_bytes()

    without = admin.client.put("/bakeforms/fresh/image", data=image)
    answer = admin.client.put(
        "/bakeforms/fresh/image", data=image, headers={"X-CSRF-Token": admin.csrf}
    )
    again = admin.client.put(
        "/bakeforms/fresh/image", data=image, headers={"X-CSRF-Token": admin.csrf}
    )

    assert without.status_code == 403
    assert answer.status_code == 201, answer.get_data(as_text=True)
    assert answer.json["name"] == "fresh" and len(answer.json["sha256"]) == 64
    assert again.status_code == 409 and again.json["error"]["code"] == "conflict"
    assert "<td>fresh</td>" in page(admin.get("/bakeforms"))


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(
    admin, fleet, settings, monkeypatch
):
    monkeypatch.setattr(fleet.context, "settings", dataclasses.replace(settings, max_upload_mib=1))
    admin.get("/bakeforms")

    response = admin.client.put(
        "/bakeforms/huge/image", data=b"x" * (1024 * 1024 + 1), headers={"X-CSRF-Token": admin.csrf}
    )

    assert response.status_code == 413
    assert response.json["error"]["code"] == "too_large"
    assert fleet.list_bakeforms() == []
    assert list(settings.root.glob("bakeforms/*")) == []


def test_a_missing_pi_is_an_html_page_not_a_traceback(admin):
    response = admin.get("/pis/0000dead")

    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "no Pi" in response.get_data(as_text=True) or "0000dead" in response.get_data(
        as_text=True
    )


def test_an_upload_body_is_never_parsed_before_the_session_and_csrf_are_checked(
    app, admin, monkeypatch
):
    """A multipart body would be spooled to disk whole by the form parser: anyone who can
    reach the port could fill the host's temp dir without signing in."""
    from werkzeug.wrappers import Request

    parsed = []
    monkeypatch.setattr(Request, "_load_form_data", lambda self: parsed.append(self.path))

    def body() -> dict:
        return {"image": (io.BytesIO(b"x" * 4096), "image.img"), "csrf_token": "guess"}

    stranger = app.test_client().put("/bakeforms/x/image", data=body())
    admin.get("/bakeforms")
    forged = admin.client.put("/bakeforms/x/image", data=body())

    assert stranger.status_code == 401 and stranger.json["error"]["code"] == "unauthorized"
    assert forged.status_code == 403
    assert parsed == []


def test_a_form_sent_after_the_session_lapsed_returns_to_its_page_after_sign_in(
    admin, fleet, admin_token
):
    fleet.register_pi("00000001")
    admin.get("/pis/00000001")
    with admin.client.session_transaction() as session:
        session.pop("token_digest")

    response = admin.post("/pis/00000001/power", {"action": "on", "back": "/pis/00000001"})

    assert response.headers["Location"] == "/sign-in?next=/pis/00000001"
    assert admin.sign_in(admin_token, "/pis/00000001").headers["Location"] == "/pis/00000001"


def test_a_sign_in_lasts_twelve_hours_however_busy_the_session(admin):
    assert admin.get("/").status_code == 200
    with admin.client.session_transaction() as session:
        session["signed_in_at"] -= 12 * 3600 + 1

    assert admin.get("/").status_code == 302


def test_a_page_that_declares_no_role_is_refused_to_every_token(app, browser, admin_token):
    app.add_url_rule("/forgotten", "web.forgotten", lambda: "open to all")
    browser.sign_in(admin_token)

    response = browser.get("/forgotten")

    assert response.status_code == 403
    assert "declares no role" in response.get_data(as_text=True)


def test_a_page_that_does_not_exist_is_a_404_not_a_request_for_a_token(browser):
    assert browser.get("/bakeform").status_code == 404
    assert browser.get("/api/v1/nothing").status_code == 401


def test_a_stopping_worker_ends_its_live_timelines_at_once(admin, fleet, monkeypatch):
    """Else each open dashboard holds a graceful stop of the service for a minute."""
    import threading

    fleet.register_pi("00000001")
    monkeypatch.setattr(stream, "_stopping", threading.Event())
    stream.stop_streams()

    text = read_stream(admin, "/pis/00000001/timeline")  # returns: the stream ended

    assert [kind for kind, _, _ in stream_events(text)][-1] == "pi"
    assert stream.STREAM_SECONDS == 60.0


@pytest.mark.parametrize("last_seen", ["²", "-5", "99999999999999999999999", "abc"])
def test_a_hostile_last_event_id_replays_from_the_start_without_an_error(
    admin, fleet, short_streams, last_seen
):
    fleet.register_pi("00000001")

    text = read_stream(admin, "/pis/00000001/timeline", **{"Last-Event-ID": last_seen})

    assert "registered" in text
