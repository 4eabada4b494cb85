"""netboot.tftp.boots: what the server remembers of each Pi, bounded, and when it asks the
fleet again."""

from __future__ import annotations

from pathlib import Path

from bakery.netboot.bootfiles import BootTarget
from bakery.netboot.tftp import boots
from bakery.netboot.tftp.boots import PiBoot, PiBoots

TARGET = BootTarget(serial="1234abcd", bake_id="0" * 32, boot_dir=Path("/b"), cmdline="x\n")


def test_a_request_after_a_quiet_spell_begins_a_new_boot():
    boot = PiBoot()
    assert boot.note("start4.elf", now=100.0)
    assert not boot.note("config.txt", now=101.0)
    assert boot.note("start4.elf", now=101.0 + boots.QUIET_PERIOD + 1)
    assert boot.requested == ["start4.elf"]  # the files of the earlier boot are forgotten


def test_the_model_comes_from_the_files_of_this_boot_only():
    boot = PiBoot()
    boot.note("start4.elf", now=1.0)
    assert boot.model() == "4B"
    for index in range(boots.REQUESTS_KEPT):
        boot.note(f"overlays/o{index}.dtbo", now=2.0)
    assert boot.model() is None and len(boot.requested) == boots.REQUESTS_KEPT


def test_a_target_is_reused_only_from_the_same_address_for_a_moment():
    boot = PiBoot()
    boot.remember(TARGET, "10.0.0.21", now=50.0)
    assert boot.target_is_fresh("10.0.0.21", now=50.0 + boots.TARGET_TTL / 2)
    assert not boot.target_is_fresh("10.0.0.22", now=50.1)
    assert not boot.target_is_fresh("10.0.0.21", now=50.0 + boots.TARGET_TTL)


def test_a_pi_is_turned_away_at_most_once_per_interval():
    boot = PiBoot()
    assert boot.time_to_turn_away(now=10.0)
    assert not boot.time_to_turn_away(now=10.0 + boots.TURN_AWAY_INTERVAL - 1)
    assert boot.time_to_turn_away(now=10.0 + boots.TURN_AWAY_INTERVAL)


def test_made_up_serials_cannot_grow_the_memory_past_its_cap(monkeypatch):
    monkeypatch.setattr(boots, "MAX_TRACKED_PIS", 3)
    tracked = PiBoots()
    kept = tracked["00000001"]
    for serial in ("00000002", "00000003", "00000001", "00000004", "00000005"):
        tracked[serial]
    assert len(tracked) == 3
    assert tracked["00000001"] is kept  # asked for again: kept, the oldest others went
