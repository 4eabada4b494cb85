"""The Pi-shaped DHCP client lives in ``bakery.sim.dhcp_client`` (simulated Pis use it
at runtime); this module keeps the tests' import path."""

from bakery.sim.dhcp_client import (  # noqa: F401
    BROADCAST_FLAG,
    OPTION_CLIENT_GUID,
    OPTION_VENDOR_CLASS,
    PI3_XID,
    PiIdentity,
    client_socket,
    offers,
)
