"""services/notifier/_dispatch.py: the retry schedule of a delivery."""

from __future__ import annotations

import random

from services.notifier._dispatch import DispatchOptions, backoff_delay


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    options = DispatchOptions(retry_base_s=5, retry_max_delay_s=60)
    rng = random.Random(7)
    delays = [backoff_delay(n, options, rng) for n in range(1, 8)]
    assert 2.5 <= delays[0] <= 5
    assert 5 <= delays[1] <= 10
    assert all(30 <= d <= 60 for d in delays[4:])
