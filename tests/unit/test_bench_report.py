"""The benchmark's report code: percentiles, spreads, targets and the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bench.report import Row, Spread, Target, latency_summary, markdown, percentile
from bench.window_opening import most_at_once


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_latency_summary_and_spread() -> None:
    assert latency_summary([3.0, 1.0, 2.0]) == {"p50_ms": 2.0, "p99_ms": 3.0, "max_ms": 3.0}
    assert Spread.of([5.0, 1.0, 3.0]) == Spread(1.0, 3.0, 5.0)


def test_targets_compare_the_right_way() -> None:
    assert Target(10_000, at_least=True).met_by(12_000)
    assert not Target(10, at_least=False).met_by(11)
    assert str(Target(50, at_least=False)) == "≤ 50"


def test_table_has_one_line_per_row() -> None:
    context = {
        "cpu": "cpu", "cores": 2, "memory_gib": 4.0, "kernel": "6", "load_before": [1.0],
        "load_after": [2.0], "started": "now", "minutes": 1.0, "sizes": {"BENCH_BURST": "10"},
    }  # fmt: skip
    rows = [
        Row("ours", "due → dialed", "tasks/s", (900.0, 1000.0, 1100.0), Target(5000, True)),
        Row("pgqueuer", "lateness p50", "ms", (1.25, 2.5, 3.75)),
    ]
    table = markdown(rows, context, {"Python": "3.11"}, repeats=3)
    assert "| ours | due → dialed | tasks/s | 900 | 1,000 | 1,100 | ≥ 5,000 | no |" in table
    assert "| pgqueuer | lateness p50 | ms | 1.25 | 2.50 | 3.75 |  |  |" in table


def test_unfinished_repeats_show_as_such_never_as_numbers() -> None:
    context = {
        "cpu": "cpu", "cores": 2, "memory_gib": 4.0, "kernel": "6", "load_before": [1.0],
        "load_after": [2.0], "started": "now", "minutes": 1.0, "sizes": {},
    }  # fmt: skip
    late = "did not finish: 3,000 of 12,000 jobs ran in 60 s"
    rows = [
        Row("peer", "lateness p50", "ms", (), unfinished=(late, late)),
        Row("peer", "lateness p99", "ms", (40.0,), unfinished=(late,)),
    ]
    table = markdown(rows, context, {}, repeats=2)
    assert f"| peer | lateness p50; 2 of 2 repeats {late}; {late} | ms | — | — | — |  |  |" in table
    assert f"| peer | lateness p99; 1 of 2 repeats {late} | ms | 40 | 40 | 40 |  |  |" in table


def test_callbacks_at_once_count_a_freed_slot_taken_at_the_same_moment_once() -> None:
    at = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
    s = timedelta(seconds=1)
    spans = [(at, at + s), (at + s, at + 2 * s), (at, at + 3 * s), (at + 2 * s, at + 3 * s)]
    assert most_at_once(spans) == 2
    assert most_at_once([(at, at + 3 * s), (at + s, at + 2 * s), (at + s, at + 3 * s)]) == 3
    assert most_at_once([]) == 0
