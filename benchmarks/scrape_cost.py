"""What watching Tally costs: CPU and RSS of the exporters, the JMX agents' time per scrape, and
each job's scrape duration and samples, read from the stack's own Prometheus over a window (run it
under the load you care about, e.g. beside `tally send` or an end-to-end run).

    .venv/bin/tally bench --only scrape     # 5 minutes
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

from tally.settings import Settings

SCRAPE_INTERVAL_S = 5  # deploy/prometheus/prometheus.yml


def _query(settings: Settings, promql: str) -> dict[str, float]:
    url = f"{settings.prometheus_base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as r:
        result = json.load(r)["data"]["result"]
    return {r["metric"].get("job", ""): round(float(r["value"][1]), 4) for r in result}


def run(settings: Settings, seconds: float) -> dict:
    time.sleep(seconds)
    w = f"{max(60, int(seconds))}s"
    cpu = _query(settings, f'sum by (job) (rate(process_cpu_seconds_total{{job=~"postgres|node|prometheus"}}[{w}]))')
    rss = _query(settings, 'sum by (job) (process_resident_memory_bytes{job=~"postgres|node|prometheus"})')
    jmx = _query(settings, f"avg by (job) (avg_over_time(jmx_scrape_duration_seconds[{w}]))")
    took = _query(settings, f"avg by (job) (avg_over_time(scrape_duration_seconds[{w}]))")
    samples = _query(settings, "sum by (job) (scrape_samples_scraped)")
    out: dict = {"scrape_window_s": seconds}
    for job, name in (("postgres", "postgres_exporter"), ("node", "node_exporter"), ("prometheus", "prometheus")):
        out[f"scrape_{name}_cpu_pct"] = round(100 * cpu.get(job, 0.0), 2)
        out[f"scrape_{name}_rss_mib"] = round(rss.get(job, 0.0) / 2**20, 1)
    for job in ("kafka", "cassandra"):
        # The agent walks the MBeans inside the JVM's own threads: time per scrape over the interval
        # is the share of a core it takes at most.
        out[f"scrape_{job}_jmx_ms"] = round(1000 * jmx.get(job, 0.0), 1)
        out[f"scrape_{job}_jmx_cpu_pct_at_most"] = round(100 * jmx.get(job, 0.0) / SCRAPE_INTERVAL_S, 2)
    for job in sorted(took):
        out[f"scrape_{job}_ms"] = round(1000 * took[job], 1)
        out[f"scrape_{job}_samples"] = int(samples.get(job, 0))
    return out


if __name__ == "__main__":
    from tally.settings import get_settings

    for k, v in run(get_settings(), 300).items():
        print(f"{k:<40} {v}")
