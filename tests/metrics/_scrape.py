"""Reading a /metrics answer in the tests, with prometheus_client's own parser."""

from __future__ import annotations

import math

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise AssertionError(f"{url}: {resp.status} {await resp.text()}")
        return parse(await resp.text())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels`; 0 when absent (a counter not moved yet)."""
    found = samples.get((name, frozenset(labels.items())), 0.0)
    return 0.0 if math.isnan(found) else found


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every `name` sample whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)
