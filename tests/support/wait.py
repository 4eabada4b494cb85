"""Waiting on a condition with a deadline: the tests' only way to synchronise.
The helper lives in ``bakery.sim.wait`` (the simulator waits the same way)."""

from bakery.sim.wait import wait_until  # noqa: F401
