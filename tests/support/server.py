"""A real Bakery server in a subprocess: ``bakery.sim.server.BakeryProcess`` (the
demo runs it too), under the tests' name."""

from bakery.sim.server import BakeryProcess as LiveServer  # noqa: F401
