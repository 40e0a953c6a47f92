# SPDX-License-Identifier: Apache-2.0
"""`llm-datadist bench --quick` (tiny sizes): runs from the installed package, prints the table,
writes the JSON and the PNG (matplotlib, the bench extra, which the test extra includes), verified
every byte, and skips the peers cleanly when they are not importable (they are not installed in
CI: NIXL pulls a multi-GB CUDA torch). Without matplotlib and tqdm (made unimportable): the same
table and JSON, plain progress lines, and the message that says how to get the plot."""
import importlib.util
import json
import struct
import subprocess
import sys
import zlib

import pytest

from test_bench_smoke import _skip_unless_pulls_work

NO_PEERS = "import sys; sys.modules['nixl_cu13'] = sys.modules['nixl_cu12'] = sys.modules['nixl'] = None; " \
           "sys.modules['mooncake'] = None; "
NO_BENCH_EXTRA = "sys.modules['matplotlib'] = sys.modules['tqdm'] = None; "
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def _bench(tmp_path, *args, timeout=240, bench_extra=True):
    out_json = tmp_path / "bench.json"
    # Peers are made unimportable in this interpreter, whatever is installed: the skip path is tested.
    code = NO_PEERS + ("" if bench_extra else NO_BENCH_EXTRA) + \
        "from llm_datadist.cli import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "bench", "--quick", *args, "--out", str(out_json)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    log = f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out, out_json, log


def _png_size(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]) & 0xFFFFFFFF
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return width, height, depth, color


def _check_no_plot(out, rec, png, log):
    assert not png.exists(), log
    assert 'no plot: matplotlib is not installed (pip install "llm-datadist[bench]"' in out.stdout, log
    assert rec["plot"]["path"] is None and "matplotlib is not installed" in rec["plot"]["skipped"], rec["plot"]


def _failure_first(out_json, log):
    """What failed, ahead of the whole log (CI shows only the start and the end of a long message)."""
    try:
        rec = json.loads(out_json.read_text())
    except (OSError, ValueError) as exc:
        return f"no JSON record ({exc})\n{log}"
    failed = [f"{r['system']}/{r['transport']} {r['placement']} {r['case']}: {r['error']}"
              for r in rec.get("rows", []) if r.get("error") or not r.get("verified", True)]
    return f"failed rows: {failed}\nnotes: {rec.get('notes')}\n{log}"


def test_bench_quick_writes_table_json_png(tmp_path):
    _skip_unless_pulls_work()
    out, out_json, log = _bench(tmp_path, "--peers", "auto", "--extras", "link,metadata,registration")
    assert out.returncode == 0, _failure_first(out_json, log)
    assert "every byte verified" in out.stdout, log
    for what in ("== reference ==", "== sweep ==", "== model ==", "== cache ==", "llm_datadist/shm",
                 "llm_datadist/tcp", "memcpy", "acceptance (issue 5)", "recorded peer baseline (NOT this run",
                 "peers: none in this run", "handshake"):
        assert what in out.stdout, (what, log)
    assert "[" in out.stderr and "/" in out.stderr, log          # the progress line
    rec = json.loads(out_json.read_text())
    assert rec["schema"] == "llm_datadist.bench/1" and rec["quick"] is True
    assert rec["command"].startswith("llm-datadist bench --quick"), rec["command"]
    for key in ("nproc", "cpu_model", "kernel", "python", "numpy", "llm_datadist"):
        assert rec["machine"].get(key) not in (None, ""), key
    assert rec["errors"] == 0, log
    ours = [r for r in rec["rows"] if r["system"] == "llm_datadist"]
    assert {(r["transport"].replace("cuda_ipc", "shm"), r["placement"]) for r in ours} == \
        {(t, p) for t in ("shm", "tcp") for p in ("host", "device")}, log
    assert {r["op"] for r in ours} == {"pull_blocks", "pull_cache"}
    assert {r["group"] for r in ours} >= {"reference", "sweep", "batch", "model", "cache"}
    for r in rec["rows"]:
        assert r["error"] == "" and r["verified"] is True, r
        assert r["median_us"] > 0 and r["p99_us"] >= r["median_us"]
    assert all("memcpy" in r["frac_of"] for r in ours if r["placement"] == "host"), log
    # peers: not importable here -> no peer rows, a reason per peer, no ratios
    assert rec["peers"]["run"] == [] and set(rec["peers"]["not_run"]) == {"nixl", "nixl_tcp", "mooncake_tcp"}
    assert not [r for r in rec["rows"] if r["system"] in ("nixl", "nixl_tcp", "mooncake_tcp")]
    assert rec["ratios"] == []
    assert all(a["against"] != "measured in this run" for a in rec["acceptance"])
    links = rec["extras"]["link"]
    for t in ("shm", "tcp"):
        assert links[t]["link_ms"]["median"] > 0 and links[t]["metadata"]["handshake_bytes"] > 0, links
    reg = rec["extras"]["registration"]
    assert "error" not in reg and reg["register_regions_ms"] > 0, reg
    png = tmp_path / "bench.png"
    if not HAVE_MATPLOTLIB:      # the test extra brings it; a bare venv gets the message instead
        _check_no_plot(out, rec, png, log)
        return
    assert rec["plot"] == {"path": str(png), "renderer": "matplotlib", "skipped": None}
    assert f"plot in {png}" in out.stdout, log
    data = png.read_bytes()
    width, height, depth, color = _png_size(data)
    assert (width, height, depth) == (900, 560, 8) and color in (2, 6), (width, height, depth, color)  # RGB(A)
    assert 5_000 < len(data) < 1_000_000


def test_bench_named_peer_missing_is_skipped(tmp_path):
    """Asking for a peer that is not importable skips it with the reason; no transfer needed.
    Without the bench extra (matplotlib, tqdm unimportable): plain progress lines, no PNG, the hint."""
    out, out_json, log = _bench(tmp_path, "--peers", "nixl,mooncake_tcp", "--transport", "none", "--groups",
                                "reference", "--extras", "none", timeout=120, bench_extra=False)
    assert out.returncode == 0, log
    rec = json.loads(out_json.read_text())
    _check_no_plot(out, rec, tmp_path / "bench.png", log)
    steps = [line for line in out.stderr.splitlines() if line.startswith("[")]
    assert steps and steps[-1].startswith(f"[{len(steps)}/"), log      # one "[done/total]" line per step
    assert rec["peers"]["run"] == []
    assert "not importable" in rec["peers"]["not_run"]["nixl"]
    assert "not importable" in rec["peers"]["not_run"]["mooncake_tcp"]
    assert {r["system"] for r in rec["rows"]} <= {"memcpy", "memcpy_mt", "cma"}


@pytest.mark.parametrize("bad", [["--transport", "rdma"], ["--groups", "nope"]])
def test_bench_rejects_unknown_values(tmp_path, bad):
    out, _, log = _bench(tmp_path, *bad, timeout=60)
    assert out.returncode == 2 and "unknown value" in out.stderr, log
