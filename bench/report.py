"""The benchmark's report: percentiles, min/median/max over repeats, the machine, the table.

Pure functions over plain values (no stack, no database), so tests/unit can check them.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile: the smallest value with `fraction` of values at or below."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil, at least the first value
    return ordered[min(len(ordered), int(rank)) - 1]


def latency_summary(millis: Sequence[float]) -> dict[str, float]:
    """p50/p99/max of one run's latencies, in milliseconds."""
    return {
        "p50_ms": round(percentile(millis, 0.50), 1),
        "p99_ms": round(percentile(millis, 0.99), 1),
        "max_ms": round(max(millis), 1),
    }


@dataclass(frozen=True)
class Spread:
    """One figure over the repeats of a run."""

    low: float
    median: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(min(values), statistics.median(values), max(values))

    def as_dict(self) -> dict[str, float]:
        return {"min": self.low, "median": self.median, "max": self.high}


@dataclass(frozen=True)
class Target:
    """What the issue asks of a figure: at least (throughput) or at most (latency)."""

    value: float
    at_least: bool

    def met_by(self, measured: float) -> bool:
        return measured >= self.value if self.at_least else measured <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {_number(self.value)}"


@dataclass(frozen=True)
class Row:
    """One line of the table: a figure, its unit, the repeats' values, maybe a target.

    `unfinished` says, one text per repeat, which repeats did not finish in their time
    ("did not finish: 3,000 of 12,000 jobs ran in 60 s"): they have no value in `values`,
    and a row whose repeats all failed to finish shows no number at all.
    """

    section: str
    name: str
    unit: str
    values: tuple[float, ...]
    target: Target | None = None
    note: str = ""
    unfinished: tuple[str, ...] = ()


def _number(value: float) -> str:
    if abs(value) >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def machine() -> dict[str, Any]:
    """CPU, memory and load of this machine, as the results record them."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory_gib = 0.0
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    memory_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "kernel": platform.release(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(
    rows: Sequence[Row], context: Mapping[str, Any], versions: Mapping[str, str], repeats: int
) -> str:
    """The whole report: machine and versions, then one table of every figure."""
    lines = ["# make bench", ""]
    lines.append(
        f"Machine: {context['cpu']}, {context['cores']} cores, {context['memory_gib']} GiB, "
        f"Linux {context['kernel']}. Load average before: "
        f"{' / '.join(str(x) for x in context['load_before'])}, after: "
        f"{' / '.join(str(x) for x in context['load_after'])}. "
        f"Started {context['started']}, took {context['minutes']} min."
    )
    lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    lines.append("")
    lines.append("Sizes: " + ", ".join(f"{k}={v}" for k, v in context["sizes"].items()) + ".")
    lines.append("")
    lines.append(f"min / median / max over {repeats} repeats.")
    lines.append("")
    lines.append("| workload | figure | unit | min | median | max | target | met |")
    lines.append("|---|---|---|---:|---:|---:|---|---|")
    for row in rows:
        name = row.name + (f" ({row.note})" if row.note else "")
        if row.unfinished:
            name += (
                f"; {len(row.unfinished)} of {len(row.values) + len(row.unfinished)} repeats "
                + "; ".join(row.unfinished)
            )
        if not row.values:  # no repeat finished: nothing was measured
            target, met = ("", "") if row.target is None else (str(row.target), "no")
            lines.append(f"| {row.section} | {name} | {row.unit} | — | — | — | {target} | {met} |")
            continue
        spread = Spread.of(row.values)
        met = "" if row.target is None else ("yes" if row.target.met_by(spread.median) else "no")
        lines.append(
            f"| {row.section} | {name} | {row.unit} | {_number(spread.low)} | "
            f"{_number(spread.median)} | {_number(spread.high)} | "
            f"{'' if row.target is None else row.target} | {met} |"
        )
    lines.append("")
    return "\n".join(lines)
