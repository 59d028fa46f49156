import json
import shutil
import subprocess
import time
import urllib.request


def _get(stack, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.prometheus_port}{path}", timeout=5) as r:
        return json.load(r)


JOBS = {"prometheus", "tally-api", "tally-dataflow", "kafka", "cassandra", "postgres", "node"}


def test_prometheus_scrapes_every_component_and_exporter(stack):
    targets: list[dict] = []
    for _ in range(40):  # the first scrape of each target happens within one interval (5 s)
        targets = _get(stack, "/api/v1/targets")["data"]["activeTargets"]
        if {t["labels"]["job"] for t in targets} >= JOBS and all(t["health"] == "up" for t in targets):
            break
        time.sleep(0.5)
    health = {(t["labels"]["job"], t["scrapeUrl"]): (t["health"], t["lastError"]) for t in targets}
    assert {job for job, _url in health} == JOBS, health
    assert all(h == "up" for h, _err in health.values()), health
    assert ("tally-api", f"http://127.0.0.1:{stack.api_port}/metrics") in health
    assert ("kafka", f"http://127.0.0.1:{stack.kafka_metrics_port}/metrics") in health


def test_alert_rules_are_loaded(stack):
    groups = _get(stack, "/api/v1/rules")["data"]["groups"]
    names = {rule["name"] for g in groups for rule in g["rules"]}
    assert {
        "TallyComponentDown",
        "TallyIngestUnavailable",
        "TallyWatermarkStalled",
        "TallyStoreRetriesPersisting",
        "TallyDeadLettersRising",
        "TallyLateEventsRising",
        "TallyLegacyDualWriteDropping",
        "TallyRolloutAnswersDiffer",
        "TallyLegacyComparisonDiffers",
        "TallyConsumerLagGrowing",
        "TallyFreshnessBeyondTarget",
        "TallyApiErrors",
        "TallyReconciliationMismatch",
        "TallyCorrectionsNotRunning",
        "TallyScrapeTargetMissing",
        "TallyDiskFilling",
        "TallyDiskFullSoon",
        "tally:consumer_lag_messages",
        "tally:freshness_seconds",
    } <= names


def test_alert_rules_are_valid_and_their_unit_tests_pass(settings):
    """promtool (Debian's prometheus package, which `make` installs) checks every rule file and runs
    the rule unit tests: each alert fires on the series it is for, and not before its `for`."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the prometheus package"
    rules = sorted((settings.deploy_dir / "prometheus" / "rules").glob("*.yml"))
    tests = sorted((settings.deploy_dir / "prometheus" / "tests").glob("*.yml"))
    for args in (["check", "rules", *rules], ["test", "rules", *tests]):
        out = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
