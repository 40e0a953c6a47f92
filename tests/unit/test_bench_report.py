# SPDX-License-Identifier: Apache-2.0
"""llm_datadist._bench.report: the one quantile helper, table printer, progress line and plot the
benchmarks share; each optional library (tqdm, matplotlib) present and absent."""
import importlib.util
import sys

import numpy as np
import pytest

from llm_datadist._bench import report
from llm_datadist._bench.report import Column, Progress, Series, Table, line_plot, quantiles


def test_quantiles_against_numpy_and_by_hand():
    values = [float(x) for x in np.random.default_rng(3).permutation(np.arange(1, 101))]
    q = quantiles(values, samples=True)
    assert q["n"] == 100 and q["median"] == 50.5 and q["mean"] == 50.5
    assert (q["min"], q["max"]) == (1.0, 100.0)
    assert q["p99"] == 100.0            # 99th percentile falls between 99 and 100: the higher, a measured value
    assert q["samples"] == sorted(values)
    assert quantiles([2.0, 1.0])["p99"] == 2.0 and quantiles([5.0])["median"] == 5.0
    assert quantiles([1.23456], digits=2)["median"] == 1.23
    assert quantiles([]) == {"n": 0}
    assert "samples" not in quantiles([1.0])


def test_table_columns_and_error_rows():
    t = Table([Column("case", 6, "<", clip=True), Column("GB/s", 8)])
    header, rule = t.header()
    assert header == "case       GB/s" and rule == "-" * len(header)
    assert t.row("abcdefgh", "1.500") == "abcdef    1.500"      # a clipped column is cut to its width
    assert Table([Column("case", 2, "<"), Column("n", 3)]).row("abcd", 7) == "abcd   7"   # others widen the row
    assert t.row_then_text(["c"], "ERROR boom") == "c      ERROR boom"
    with pytest.raises(ValueError, match="2 columns got 1"):
        t.row("only one")
    assert report.fmt(None, ".3f") == "-" and report.fmt(2.0, ".1f") == "2.0"


def test_progress_without_tqdm_prints_one_line_per_step(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    p = Progress(3)
    p.step("first")
    p.note("not a step")
    p.step("second", n=2)
    p.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1/3]") and lines[0].endswith("first")
    assert lines[1].startswith("[3/3]") and lines[1].endswith("second")


@pytest.mark.skipif(importlib.util.find_spec("tqdm") is None, reason="tqdm (the bench extra) is not installed")
def test_progress_with_tqdm(capsys):
    p = Progress(2, desc="unit")
    p.step("one")
    p.step("two")
    p.close()
    err = capsys.readouterr().err
    assert "unit" in err and "2/2" in err and "two" in err


def test_plot_without_matplotlib_says_how_to_get_it(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    why = line_plot(tmp_path / "p.png", [Series("a", [(1.0, 2.0)])], "t", "x", "y")
    assert why == 'no plot: matplotlib is not installed (pip install "llm-datadist[bench]" draws p.png)'
    assert not (tmp_path / "p.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                    reason="matplotlib (the bench extra) is not installed")
def test_plot_with_matplotlib_writes_a_png(tmp_path):
    out = tmp_path / "sub" / "p.png"
    series = [Series("ours", [(4096.0, 1.0), (16384.0, 3.0)]), Series("ceiling", [(4096.0, 5.0)], dashed=True)]
    assert line_plot(out, series, "title", "block size", "GB/s", subtitle="sub") is None
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert report._bytes_label(4096) == "4 KiB" and report._bytes_label(3 << 20) == "3 MiB"
    assert report._bytes_label(512) == "512 B"
