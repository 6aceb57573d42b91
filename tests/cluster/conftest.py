"""The cluster the fault tests share (one per module: each test heals what it broke),
and the figures they measure, printed at the end of the run for the closing note.

The suite is heavy (a 3-node NATS cluster, 10 service processes, hundreds of jobs per
test): it is marked `cluster`, left out of `make test`, and run by `make test-cluster`
(which `.ci/run` runs too). `CLINAI_TEST_KEEP_CLUSTER=<folder>` keeps the cluster's
folder there afterwards: every service's log, the NATS stores (start the nodes again on
their config files to read the stream with `clinai tail`)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._infra import short_tmp_dir
from tests.cluster._hosts import Cluster, running_cluster
from tests.cluster._stack import ClusterStack, prepare

FIGURES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("cluster figures")
        for test, line in FIGURES:
            terminalreporter.write_line(f"{test}: {line}")


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str) -> Iterator[Cluster]:
    keep = os.environ.get("CLINAI_TEST_KEEP_CLUSTER")  # a folder: the logs stay there
    if keep:
        root = Path(tempfile.mkdtemp(prefix="clinai-cluster-", dir=keep))
        with running_cluster(root, s3_endpoint) as running:
            yield running
        return
    with short_tmp_dir("clinai-cluster-") as root, running_cluster(root, s3_endpoint) as running:
        yield running


@pytest.fixture(scope="module")
def stack(cluster: Cluster) -> ClusterStack:
    return asyncio.run(prepare(cluster))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    for line in lines:
        print(f"[cluster figures] {request.node.name}: {line}")
        FIGURES.append((request.node.name, line))
