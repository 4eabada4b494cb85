"""Reading a metrics page as Prometheus would: its samples, summed over the labels a test
does not name, and the names its families expose."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bakery import metrics

#: The sample names each type of family exposes beside (or instead of) its own name.
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "untyped": ("",),
}


@dataclass(frozen=True)
class Page:
    text: str

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        """The samples called ``name``, summed by the value of one label."""
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(self.text):
            for sample in family.samples:
                if sample.name == name:
                    key = sample.labels[label]
                    found[key] = found.get(key, 0.0) + sample.value
        return found

    def label_values(self) -> set[str]:
        return {
            value
            for family in text_string_to_metric_families(self.text)
            for sample in family.samples
            for value in sample.labels.values()
        }

    def exposed_names(self) -> set[str]:
        """Every name a query may use: each family's samples' names, by its type, whether
        it has samples yet or not."""
        return {
            family.name + suffix
            for family in text_string_to_metric_families(self.text)
            for suffix in SUFFIXES[family.type]
        }


def growth(before: Page, after: Page, name: str, label: str) -> dict[str, float]:
    """How much the samples called ``name`` grew between two pages, by one label's value
    (the values that did not move are left out)."""
    old, new = before.by(name, label), after.by(name, label)
    grown = {value: total - old.get(value, 0.0) for value, total in new.items()}
    return {value: delta for value, delta in grown.items() if delta}


def scrape(collectors=()) -> Page:
    """This process's own metrics page (it counts in memory: tests join no directory)."""
    body, _ = metrics.exposition(None, collectors)
    return Page(body.decode())


SCRAPER = """
import sys
from pathlib import Path
from bakery import metrics
metrics.use_directory(Path(sys.argv[1]))
sys.stdout.write(metrics.exposition(None)[0].decode())
"""


def scrape_directory(directory: Path) -> Page:
    """What a scrape by a process joining ``directory`` shows (a process of its own: this
    one counts in memory and must stay so)."""
    done = subprocess.run(
        [sys.executable, "-c", SCRAPER, str(directory)], capture_output=True, text=True, check=True
    )
    return Page(done.stdout)
