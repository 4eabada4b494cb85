"""Dependencies flow one way (ARCHITECTURE.md): every import in ``src/`` is read and an edge
that goes up a layer fails, naming the module and the line. The layer list lives here."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Top to bottom; a module may import its own layer and those below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("bakery.cli", "bakery.serve", "bakery.sim")),
    (
        "services",
        (
            "bakery.app",
            "bakery.api",
            "bakery.web",
            "bakery.netboot.service",
            "bakery.netboot.tftp",
            "bakery.netboot.httpboot",
            "bakery.netboot.netconsole",
            "bakery.netboot.dnsmasq",
        ),
    ),
    ("orchestration", ("bakery.fleet", "bakery.auth")),
    (
        "parts",
        (
            "bakery.images",
            "bakery.roots",
            "bakery.disks",
            "bakery.exports",
            "bakery.nfsserver",
            "bakery.power",
            "bakery.stemcell",
            "bakery.netboot.bootfiles",
            "bakery.netboot",
            "bakery.neighbours",
            "bakery.supervisor",
            "bakery.client",
        ),
    ),
    (
        "foundation",
        (
            "bakery.models",
            "bakery.config",
            "bakery.identifiers",
            "bakery.fsutil",
            "bakery.errors",
            "bakery.redaction",
            "bakery.metrics",
            "bakery.signals",
            "bakery",
        ),
    ),
]
#: What the API may import besides itself: the fleet facade, tokens, error types, the
#: identifier rules its fields validate with, what it must hide, and the metrics it counts
#: requests in and shows at /metrics.
API_MAY_IMPORT = (
    "bakery.fleet",
    "bakery.auth",
    "bakery.errors",
    "bakery.identifiers",
    "bakery.redaction",
    "bakery.metrics",
)
#: The dashboard is the API's sibling: the same, plus the API's schemas and role groups
#: (one place says what a value may be and who may act), and the timeline's formatting.
WEB_MAY_IMPORT = (*API_MAY_IMPORT, "bakery.config", "bakery.netboot.bootfiles")
#: The netboot servers know the fleet only through ``bootfiles.BootSource``.
NETBOOT_MUST_NOT_IMPORT = ("bakery.fleet", "bakery.models", "bakery.auth")


@dataclass(frozen=True)
class Edge:
    module: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.module} (line {self.line}) imports {self.imported}"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (SRC / name.replace(".", "/") / "__init__.py").exists()


def is_module(name: str) -> bool:
    return is_package(name) or (SRC / f"{name.replace('.', '/')}.py").exists()


def imports_of(path: Path) -> list[Edge]:
    """Every module of ours that ``path`` imports, wherever the import statement is."""
    module = module_name(path)
    package = module if is_package(module) else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            edges += [Edge(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                target = f"{base}.{alias.name}"
                edges.append(Edge(module, target if is_module(target) else base, node.lineno))
    return [edge for edge in edges if edge.imported.split(".")[0] in ("bakery", "bakery_cpi")]


def all_edges() -> list[Edge]:
    return [edge for path in sorted(SRC.rglob("*.py")) for edge in imports_of(path)]


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def layer_of(name: str) -> int:
    """The index of the layer whose most specific prefix names ``name``."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if within(name, (prefix,)) and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    if best is None:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS")
    return best[0]


def bakery_edges() -> list[Edge]:
    return [edge for edge in all_edges() if edge.module.split(".")[0] == "bakery"]


def test_every_module_is_in_a_layer():
    for path in sorted((SRC / "bakery").rglob("*.py")):
        layer_of(module_name(path))


def test_no_import_goes_up_a_layer():
    upward = [
        f"{edge} ({LAYERS[layer_of(edge.module)][0]} -> {LAYERS[layer_of(edge.imported)][0]})"
        for edge in bakery_edges()
        if layer_of(edge.imported) < layer_of(edge.module)
    ]
    assert not upward, "\n".join(upward)


def test_the_api_talks_to_the_fleet_facade_only():
    strays = [
        str(edge)
        for edge in bakery_edges()
        if within(edge.module, ("bakery.api",)) and not _api_may_import(edge.imported)
    ]
    assert not strays, "\n".join(strays)


def _api_may_import(name: str) -> bool:
    if name == "bakery" or within(name, ("bakery.api",)):
        return True
    return name in API_MAY_IMPORT


def test_the_dashboard_talks_to_the_fleet_facade_and_the_api_only():
    strays = [
        str(edge)
        for edge in bakery_edges()
        if within(edge.module, ("bakery.web",))
        and not (_api_may_import(edge.imported) or within(edge.imported, ("bakery.web",)))
        and edge.imported not in WEB_MAY_IMPORT
    ]
    assert not strays, "\n".join(strays)


def test_only_the_fleet_itself_imports_its_modules():
    strays = [
        str(edge)
        for edge in bakery_edges()
        if edge.imported.startswith("bakery.fleet.") and not within(edge.module, ("bakery.fleet",))
    ]
    assert not strays, "\n".join(strays)


@pytest.mark.parametrize(
    "server", ["bakery.netboot.tftp", "bakery.netboot.dnsmasq", "bakery.netboot.service"]
)
def test_the_netboot_servers_reach_the_fleet_only_through_the_boot_source(server):
    strays = [
        str(edge)
        for edge in bakery_edges()
        if within(edge.module, (server,)) and within(edge.imported, NETBOOT_MUST_NOT_IMPORT)
    ]
    assert not strays, "\n".join(strays)


def test_the_cpi_talks_to_bakery_over_http_only():
    cpi = [edge for edge in all_edges() if edge.module.split(".")[0] == "bakery_cpi"]
    assert cpi, "no imports found in bakery_cpi: is SRC right?"
    assert not [str(edge) for edge in cpi if edge.imported.split(".")[0] == "bakery"]


def test_an_upward_import_is_caught():
    """The checker itself: a module of the foundation importing the fleet is refused."""
    edge = Edge("bakery.models", "bakery.fleet", 1)
    assert layer_of(edge.imported) < layer_of(edge.module)
