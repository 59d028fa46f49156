"""The named metrics an API worker serves follow target/semantic_manifest.json (tally.semantic.manifest_file):
read at start, read again when the file changes (at most once per check interval), and a file that
is not a valid manifest never replaces the last valid one."""

from __future__ import annotations

import logging
import os

from tally.semantic.manifest_file import ManifestFile
from tests.unit.named_manifest import TYPE, encoded, manifest, simple

SIGNUPS = simple("signups", "events", f"{TYPE} = 'signup'")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_without_a_manifest_there_are_no_named_metrics(tmp_path):
    f = ManifestFile(tmp_path / "target" / "semantic_manifest.json")
    assert f.current().names == () and f.problem is None and f.loaded_at is None


def test_a_changed_manifest_is_served_after_the_next_check(tmp_path):
    path, clock = tmp_path / "semantic_manifest.json", Clock()
    write(path, encoded(manifest()), 1_000_000_000)
    f = ManifestFile(path, check_every_s=2.0, clock=clock)
    assert "signups" not in f.current().names and f.loaded_at is not None

    write(path, encoded(manifest(SIGNUPS)), 2_000_000_000)
    clock.now = 1.0
    assert "signups" not in f.current().names  # not looked at again yet
    clock.now = 2.0
    assert "signups" in f.current().names


def test_a_file_appearing_later_is_picked_up(tmp_path):
    path, clock = tmp_path / "semantic_manifest.json", Clock()
    f = ManifestFile(path, clock=clock)
    write(path, encoded(manifest()))
    clock.now = 10
    assert "purchases" in f.current().names


def test_an_invalid_manifest_keeps_the_last_valid_one_and_says_why(tmp_path, caplog):
    path, clock = tmp_path / "semantic_manifest.json", Clock()
    write(path, encoded(manifest(SIGNUPS)), 1_000_000_000)
    f = ManifestFile(path, clock=clock)
    valid = f.current()

    with caplog.at_level(logging.WARNING, "tally.semantic"):
        write(path, encoded(manifest(SIGNUPS))[:100], 2_000_000_000)  # cut short, as if half written
        clock.now = 10
        assert f.current() is valid
    assert "not a valid semantic manifest (not JSON" in f.problem and "serving the metrics read at" in f.problem
    assert f.problem in caplog.text

    write(path, b'{"semantic_models": []}', 3_000_000_000)
    clock.now = 20
    assert f.current() is valid and "no `metrics` list" in f.problem

    path.unlink()
    clock.now = 30
    assert f.current() is valid and "is gone" in f.problem

    write(path, encoded(manifest()), 4_000_000_000)
    clock.now = 40
    assert f.current() is not valid and "signups" not in f.current().names and f.problem is None


def test_a_metric_tally_cannot_compute_is_logged_and_the_rest_served(tmp_path, caplog):
    path = tmp_path / "semantic_manifest.json"
    country = simple("by_country", "events", "{{ Dimension('event__country') }} = 'de'")
    write(path, encoded(manifest(country)))
    with caplog.at_level(logging.WARNING, "tally.semantic"):
        f = ManifestFile(path)
    assert "by_country" in f.current().refused and "purchases" in f.current().names
    assert "named metric by_country is not served: filters on Dimension('event__country')" in caplog.text
    assert f.problem is None  # a metric refused is not a problem with the file


def test_a_file_rewritten_with_the_same_time_and_size_but_a_new_inode_is_read_again(tmp_path):
    path, clock = tmp_path / "semantic_manifest.json", Clock()
    a, b = encoded(manifest(SIGNUPS)), encoded(manifest(simple("signupz", "events", f"{TYPE} = 'signup'")))
    assert len(a) == len(b)
    write(path, a, 1_000_000_000)
    f = ManifestFile(path, clock=clock)
    tmp = tmp_path / "new.json"
    write(tmp, b, 1_000_000_000)
    os.replace(tmp, path)  # as `make metrics` publishes
    clock.now = 10
    assert "signupz" in f.current().names
