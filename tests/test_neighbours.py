"""Reading the kernel's neighbour table: which MAC answers for an address."""

from __future__ import annotations

from bakery.neighbours import mac_of, parse_arp_table

TABLE = """\
IP address       HW type     Flags       HW address            Mask     Device
10.0.0.57        0x1         0x2         DC:A6:32:01:02:03     *        eth1
10.0.0.58        0x1         0x0         00:00:00:00:00:00     *        eth1
10.0.0.59        0x1         0x6         dc:a6:32:01:02:09     *        eth1
10.0.0.60        0x1         zz          dc:a6:32:01:02:0a     *        eth1
truncated line
"""


def test_complete_entries_map_addresses_to_lower_case_macs_and_garbage_is_skipped():
    assert parse_arp_table(TABLE) == {
        "10.0.0.57": "dc:a6:32:01:02:03",
        "10.0.0.59": "dc:a6:32:01:02:09",  # complete and permanent
    }


def test_an_address_still_being_resolved_has_no_mac(tmp_path):
    table = tmp_path / "arp"
    table.write_text(TABLE)
    assert mac_of("10.0.0.57", table) == "dc:a6:32:01:02:03"
    assert mac_of("10.0.0.58", table) is None
    assert mac_of("10.0.0.60", table) is None  # unreadable flags
    assert mac_of("10.0.0.61", table) is None


def test_no_table_means_no_mac(tmp_path):
    assert mac_of("10.0.0.57", tmp_path / "missing") is None
