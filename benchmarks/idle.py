"""What each component of a running stack costs while nothing is sent: CPU and RSS over a window.
Dagster's sensors, schedules and freshness checks keep running when the stream is idle; this is
their price on a 2-core box.

    .venv/bin/tally bench --only idle       # 5 minutes
"""

from __future__ import annotations

import time

from benchmarks.components import Sampler
from tally.settings import Settings


def run(settings: Settings, seconds: float) -> dict:
    sampler = Sampler()
    time.sleep(seconds)
    return {f"idle_{k}": v for k, v in sampler.stop().items()} | {"idle_seconds": seconds}


if __name__ == "__main__":
    from tally.settings import get_settings

    for k, v in run(get_settings(), 300).items():
        print(f"{k:<28} {v}")
