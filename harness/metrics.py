"""METRICS=1 (docs/metrics.md): which compose files add it to a stack, and Prometheus' HTTP API
as the tests read it (https://prometheus.io/docs/prometheus/latest/querying/api/)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from ruamel.yaml import YAML

from harness.compose import ROOT
from harness.traffic import POLL

PROMETHEUS_DIR = ROOT / "shared" / "prometheus"


def seconds(duration: str) -> float:
    """A Prometheus duration of one unit ("30s", "5m", "1h") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    unit = "ms" if duration.endswith("ms") else duration[-1]
    return float(duration[: -len(unit)]) * units[unit]


# The tests' Prometheus: the shipped prometheus.yml with short global intervals, so that a
# scrape or an evaluation comes within seconds, not ten (tests/overlays/prometheus-fast.yaml
# mounts it over the shipped file); only the intervals differ from what users run.
TEST_INTERVALS = {"scrape_interval": "3s", "evaluation_interval": "3s"}
TEST_CONFIG = "PROMETHEUS_TEST_CONFIG"  # the variable naming it, for the overlay and config()


def write_test_config(folder: Path) -> Path:
    """The shipped prometheus.yml with TEST_INTERVALS, written into `folder`; its path."""
    yaml = YAML()  # round trip: the shipped file's comments and order stay
    data = yaml.load(PROMETHEUS_DIR / "prometheus.yml")
    data["global"].update(TEST_INTERVALS)
    folder.mkdir(parents=True, exist_ok=True)
    path, written = folder / "prometheus.yml", folder / f".prometheus.yml.{os.getpid()}"
    yaml.dump(data, written)
    os.replace(written, path)  # whole: each xdist worker writes it, a mounted copy stays intact
    return path


def config() -> dict:
    """The prometheus.yml the running stacks have, parsed: the tests' copy where one is set
    ($PROMETHEUS_TEST_CONFIG), else shared/prometheus/prometheus.yml."""
    return YAML(typ="safe").load(
        Path(os.environ.get(TEST_CONFIG) or PROMETHEUS_DIR / "prometheus.yml")
    )


def alert_rule(name: str) -> dict:
    """The alert rule `name` of shared/prometheus/alerts.yml (expr, for, labels...)."""
    rules = YAML(typ="safe").load(PROMETHEUS_DIR / "alerts.yml")
    found = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name]
    assert len(found) == 1, f"alerts.yml has {len(found)} rules named {name}"
    return found[0]


@dataclass
class Sample:
    labels: dict[str, str]
    time: float  # the scrape's start (stamped()), or the query's instant (query())
    value: float


@dataclass
class Prometheus:
    """A Prometheus server's query API (its published 127.0.0.1 port)."""

    url: str

    def get(self, path: str, **params) -> dict:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = answer.json()
        assert body.get("status") == "success", f"{path} {params}: {answer.status_code} {body}"
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector now (each sample's time: the query's)."""
        result = self.get("query", query=promql)["result"]
        return [Sample(r["metric"], float(r["value"][0]), float(r["value"][1])) for r in result]

    def stamped(self, selector: str) -> list[Sample]:
        """A plain selector's series now, each with the time of the scrape its value is from
        (`timestamp()`, asked at the same instant, so of the same samples)."""
        now = f"{time.time():.3f}"
        values = self.get("query", query=selector, time=now)["result"]
        stamps = self.get("query", query=f"timestamp({selector})", time=now)["result"]

        def key(labels: dict) -> frozenset:
            return frozenset((k, v) for k, v in labels.items() if k != "__name__")

        when = {key(s["metric"]): float(s["value"][1]) for s in stamps}
        return [Sample(v["metric"], when[key(v["metric"])], float(v["value"][1])) for v in values]

    def counts(self, promql: str, by: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """An aggregation's values keyed by the labels `by`, e.g. ("route", "status")."""
        return {tuple(s.labels.get(label, "") for label in by): s.value for s in self.query(promql)}

    def scraped_after(self, job: str, after: float, timeout: float = 40) -> float:
        """Wait until every target of `job` has been scraped, successfully, in a scrape that
        began after `after` (a time.time()); returns the latest such scrape's time."""
        deadline = time.monotonic() + timeout
        while True:
            ups = self.stamped(f'up{{job="{job}"}}')
            if ups and all(s.time > after and s.value == 1 for s in ups):
                return max(s.time for s in ups)
            if time.monotonic() > deadline:
                raise AssertionError(f"no successful scrape of job {job} after {after}: {ups}")
            time.sleep(POLL)

    def alerts(self, name: str) -> list[dict]:
        """The alerts named `name` now, pending or firing (each with its labels and state)."""
        return [a for a in self.get("alerts")["alerts"] if a["labels"].get("alertname") == name]
