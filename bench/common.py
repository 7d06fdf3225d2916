"""What every benchmark returns, so `bench/run.py` can print one table.

Each `bench/bench_<name>.py` defines `run() -> list[Result]` (plain function; it may call
asyncio.run inside). A result carries the measured rate, the raw baseline measured in the same
run (None where the target is absolute), and the target, so a reader sees the ratio and whether
it holds without trusting a number written down last month.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Self


@dataclass
class Result:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if not self.baseline:
            return None
        return self.value / self.baseline

    def row(self) -> str:
        ratio = f"{self.ratio:.2f}x" if self.ratio is not None else "-"
        base = f"{self.baseline:,.0f} ({self.baseline_name})" if self.baseline else "-"
        met = {True: "yes", False: "NO", None: "-"}[self.met]
        return f"| {self.name} | {self.value:,.0f} {self.unit} | {base} | {ratio} | {self.target} | {met} |"


HEADER = (
    "| benchmark | measured | raw baseline (same run) | ratio | target | met |\n"
    "|---|---|---|---|---|---|"
)


class Timer:
    """`with Timer() as t: ...; t.elapsed` in seconds (perf_counter)."""

    def __enter__(self) -> Self:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
