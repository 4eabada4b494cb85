"""fleet.events: a Pi's timeline reads as boots, each event timed from the power-on that
began its boot, and can be followed from the last event seen."""

from __future__ import annotations

from datetime import timedelta

from bakery.fleet import events
from bakery.models import Event


def at(pi, seconds: float, kind: str, message: str, **data) -> None:
    """An event ``seconds`` after the Pi's registration."""
    start = Event.select().where(Event.pi == pi).order_by(Event.id).first().created_at
    Event.create(
        pi=pi, kind=kind, message=message, data=data, created_at=start + timedelta(seconds=seconds)
    )


def power(pi, seconds: float, action: str, outcome: str = "ok") -> None:
    at(pi, seconds, "power", f"power {action}", action=action, outcome=outcome)


def test_each_event_is_timed_from_the_power_on_of_its_boot(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on", outcome="error")  # a failed switch starts no boot
    power(pi, 2.0, "on")
    at(pi, 2.5, "boot", "start4.elf 2.2 MB in 0.21 s")
    power(pi, 10.0, "off")
    power(pi, 20.0, "cycle")
    at(pi, 23.25, "boot", "cmdline.txt 162 B in 0.00 s")

    timeline = fleet.timeline("00000001")

    assert [event.since_power_on for event in timeline] == [None, None, 0.0, 0.5, 8.0, 0.0, 3.25]


def test_a_window_of_the_timeline_still_knows_its_boots_power_on(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on")
    for second in range(2, 30):
        at(pi, second, "boot", f"file {second}")

    newest = fleet.timeline("00000001", limit=3)

    assert [event.since_power_on for event in newest] == [26.0, 27.0, 28.0]


def test_following_a_timeline_gets_only_the_events_after_the_last_seen(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on")
    seen = fleet.timeline("00000001")[-1].id
    at(pi, 2.0, "boot", "start4.elf")
    at(pi, 3.0, "boot", "cmdline.txt")

    new = fleet.timeline("00000001", after=seen)

    assert [event.message for event in new] == ["start4.elf", "cmdline.txt"]
    assert [event.since_power_on for event in new] == [1.0, 2.0]
    assert events.is_power_on(fleet.timeline("00000001")[1])


def test_a_boot_splits_into_bootloader_boot_files_and_userspace(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on")
    at(pi, 4.0, "boot", "start4.elf requested", step="first_request")
    at(pi, 4.5, "boot", "start4.elf 2.2 MB in 0.21 s", step="served")
    at(pi, 6.0, "boot", "no such file: pieeprom.sig", step="missing")
    at(pi, 7.25, "boot", "cmdline.txt 162 B in 0.00 s", step="served")
    at(pi, 31.25, "boot", "userspace up 30.25 s after power-on", step="userspace_up")
    at(pi, 91.0, "boot", "a later report changes nothing", step="served")

    (boot,) = fleet.boot_history("00000001")

    assert boot.outcome == "up"
    assert boot.phases == [
        ("bootloader", 3.0),
        ("boot files", 3.25),
        ("kernel and userspace", 24.0),
    ]
    assert boot.seconds == 30.25


def test_boots_cut_short_stalled_and_still_going_say_so(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on")
    at(pi, 2.0, "boot", "start4.elf requested", step="first_request")
    power(pi, 3.0, "off")  # cut before it was up
    power(pi, 10.0, "on", outcome="error")  # a failed switch starts no boot
    power(pi, 20.0, "cycle")
    at(pi, 21.0, "boot", "start4.elf requested", step="first_request")
    at(pi, 620.0, "boot", "stalled: userspace not up", step="stalled")
    power(pi, 700.0, "on")
    at(pi, 702.0, "boot", "start4.elf requested", step="first_request")

    boots = fleet.boot_history("00000001")

    assert [boot.outcome for boot in boots] == ["cut", "stalled", "booting"]
    assert [boot.phases for boot in boots] == [
        [("bootloader", 1.0), ("boot files", 0.0)],
        [("bootloader", 1.0), ("boot files", 0.0), ("kernel and userspace", 599.0)],
        [("bootloader", 2.0), ("boot files", 0.0)],
    ]
    assert [boot.outcome for boot in fleet.boot_history("00000001", boots=2)] == [
        "stalled",
        "booting",
    ]


def test_a_cut_boot_stays_cut_a_late_boot_is_up_and_a_boot_without_files_is_one_span(fleet):
    pi = fleet.register_pi("00000001")
    power(pi, 1.0, "on")
    at(pi, 2.0, "boot", "start4.elf requested", step="first_request")
    power(pi, 3.0, "off")
    at(pi, 601.0, "boot", "stalled: userspace not up", step="stalled")  # after the power-off
    power(pi, 700.0, "on")
    at(pi, 701.0, "boot", "start4.elf requested", step="first_request")
    at(pi, 1300.0, "boot", "stalled: userspace not up", step="stalled")
    at(pi, 1310.0, "boot", "userspace up", step="userspace_up")
    power(pi, 2000.0, "on")
    at(pi, 2030.0, "boot", "userspace up", step="userspace_up")

    boots = fleet.boot_history("00000001")

    assert [boot.outcome for boot in boots] == ["cut", "up", "up"]
    assert boots[0].phases == [("bootloader", 1.0), ("boot files", 0.0)]
    assert boots[1].seconds == 610.0
    assert boots[2].phases == [("whole boot", 30.0)]
