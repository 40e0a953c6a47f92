# SPDX-License-Identifier: Apache-2.0
"""What every benchmark here reports with: quantiles (numpy), a text table, a progress line (tqdm
when installed), a line plot (matplotlib when installed).

tqdm and matplotlib come with the `bench` extra (`pip install "llm-datadist[bench]"`); without
them the progress is one plain line per step and the plot is skipped with that hint, while the
table and the JSON are the same.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

BENCH_EXTRA_HINT = 'pip install "llm-datadist[bench]"'


# ---------------------------------------------------------------------------------------------
# quantiles

def quantiles(values: Sequence[float], digits: int = 3, samples: bool = False) -> Dict[str, Any]:
    """n, median, mean, min, max and p99 of `values` (rounded to `digits`); p99 is the smallest
    sample at or above the 99th percentile (numpy's "higher" method: a time that was measured).
    With `samples`, the sorted samples too. Empty input: {"n": 0}."""
    if len(values) == 0:
        return {"n": 0}
    v = np.sort(np.asarray(values, dtype=np.float64))
    out: Dict[str, Any] = {
        "n": int(v.size),
        "median": round(float(np.median(v)), digits),
        "mean": round(float(v.mean()), digits),
        "min": round(float(v[0]), digits),
        "max": round(float(v[-1]), digits),
        "p99": round(float(np.percentile(v, 99, method="higher")), digits),
    }
    if samples:
        out["samples"] = [round(float(x), digits) for x in v]
    return out


# ---------------------------------------------------------------------------------------------
# text table

@dataclass(frozen=True)
class Column:
    header: str
    width: int
    align: str = ">"     # ">" right, "<" left
    clip: bool = False   # cut longer values to the width (otherwise they push the row wider)


class Table:
    """Fixed-width columns: header, rule, rows; a row may end in free text spanning the rest
    (an ERROR message) after its first cells."""

    def __init__(self, columns: Sequence[Column]) -> None:
        self.columns = list(columns)

    def _cells(self, values: Sequence[Any]) -> str:
        return " ".join(f"{str(v)[:c.width] if c.clip else str(v):{c.align}{c.width}}"
                        for c, v in zip(self.columns, values))

    def header(self) -> List[str]:
        line = self._cells([c.header for c in self.columns])
        return [line, "-" * len(line)]

    def row(self, *values: Any) -> str:
        if len(values) != len(self.columns):
            raise ValueError(f"a row of {len(self.columns)} columns got {len(values)} values")
        return self._cells(values)

    def row_then_text(self, values: Sequence[Any], text: str) -> str:
        return self._cells(values) + " " + text


def fmt(value: Optional[float], spec: str, missing: str = "-") -> str:
    """format(value, spec), or `missing` for None."""
    return missing if value is None else format(value, spec)


# ---------------------------------------------------------------------------------------------
# progress

class Progress:
    """The progress of a run on stderr: a tqdm bar when tqdm is installed, else one plain line per
    step ("[done/total] elapsed message"). `note` shows a message without a step."""

    def __init__(self, total: int, desc: str = "bench") -> None:
        self.total, self.done, self.t0 = max(total, 1), 0, time.time()
        self._bar: Any = None
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=self.total, desc=desc, file=sys.stderr, dynamic_ncols=True, leave=True)

    def step(self, msg: str, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.set_postfix_str(msg.strip(), refresh=False)
            self._bar.update(n)
        else:
            print(f"[{self.done}/{self.total}] {time.time() - self.t0:5.0f}s  {msg.strip()}", file=sys.stderr,
                  flush=True)

    def note(self, msg: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(msg.strip())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------------------------
# plot

def _bytes_label(x: float) -> str:
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if x >= size:
            return f"{x / size:g} {unit}"
    return f"{x:g} B"


@dataclass
class Series:
    label: str
    points: List[Tuple[float, float]]
    dashed: bool = False     # a ceiling, not a system


def line_plot(path: Path, series: Sequence[Series], title: str, xlabel: str, ylabel: str, subtitle: str = "",
              log_x: bool = True) -> Optional[str]:
    """Draws `series` into the PNG `path` with matplotlib (no pyplot: no global backend is chosen
    for the process) and returns None; without matplotlib, draws nothing and returns why, with
    the command that installs it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return f"no plot: matplotlib is not installed ({BENCH_EXTRA_HINT} draws {path.name})"
    fig = Figure(figsize=(9, 5.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s in series:
        xs, ys = zip(*sorted(s.points)) if s.points else ((), ())
        ax.plot(xs, ys, linestyle="--" if s.dashed else "-", marker="" if s.dashed else "o", label=s.label)
    if log_x:
        from matplotlib.ticker import FuncFormatter
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _bytes_label(x)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    ax.grid(True, which="major", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return None
