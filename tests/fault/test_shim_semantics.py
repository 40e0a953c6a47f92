# SPDX-License-Identifier: Apache-2.0
"""How a fault behaves once armed: stickiness, transient recovery, every trigger, the device and
function scopes, initialization calls, one decision per user call, threads, the JSON log."""
from __future__ import annotations

import json

from fault_harness import run_probe

Q = "dl:cuStreamQuery"  # a cheap driver call that needs no context


def test_sticky_fault_latches_every_function_until_reset(fault_build):
    run = run_probe(fault_build, ["setup", "arm:xid=48;functions=cuStreamQuery", "dl:cuMemsetD8_v2",
                                  Q, "dl:cuMemsetD8_v2", "rt:cudaMalloc", "threads:4:10:dl:cuMemcpy",
                                  "lasterr", "reset", "dl:cuMemsetD8_v2", "lasterr"])
    assert run.codes("dl:cuMemsetD8_v2") == [0, 214, 0]
    assert run.codes(Q) == [214]
    assert run.codes("rt:cudaMalloc") == [214]
    assert run.line("threads") == "threads dl:cuMemcpy ok=0 failed=40", "latched for every thread"
    lasterr = [line for line in run.lines if line.startswith("lasterr")]
    assert lasterr == ["lasterr 214", "lasterr 0"]
    assert run.stderr.count("event=fired") == 1, "one line per state change, not per failed call"


def test_non_sticky_fails_only_matching_calls(fault_build):
    run = run_probe(fault_build, ["setup", "arm:code=702;sticky=0;functions=cuMemcpy*", "dl:cuMemcpyAsync",
                                  "dl:cuMemsetD8_v2", "dl:cuMemcpyHtoD_v2", "dl:cuMemcpyAsync", "lasterr"])
    assert run.codes() == [702, 0, 702, 702]
    assert run.line("lasterr") == "lasterr 0", "driver failures do not set the runtime's last error"


def test_transient_fault_fails_k_times_then_recovers(fault_build):
    run = run_probe(fault_build, ["setup", "arm:code=701;transient=2", "rt:cudaMemcpyAsync", "peekerr",
                                  "lasterr", "lasterr", "rt:cudaMemcpyAsync", "rt:cudaMemcpyAsync",
                                  "rt:cudaMemcpyAsync", "state"])
    assert run.codes("rt:cudaMemcpyAsync") == [701, 701, 0, 0]
    assert [l for l in run.lines if l.startswith(("peekerr", "lasterr"))] == [
        "peekerr 701", "lasterr 701", "lasterr 0"], "an injected transient error is reported once"
    assert run.line("state") == "state recovered xid=0 code=701 injections=2"
    assert "event=recovered after=2 injected failures" in run.stderr


def test_transient_repeat_rearms(fault_build):
    run = run_probe(fault_build, ["setup", "arm:code=909;transient=1;repeat=1;after_calls=2;functions=cuStreamQuery",
                                  *[Q] * 9])
    assert run.codes(Q) == [0, 0, 909] * 3
    assert run.stderr.count("event=rearmed") == 3


def test_after_calls_counts_matching_calls_only(fault_build):
    run = run_probe(fault_build, ["setup", "arm:xid=31;after_calls=3;functions=cuStreamQuery",
                                  Q, "dl:cuMemcpy", Q, "dl:cuMemcpy", Q, "dl:cuMemcpy", Q, "dl:cuMemcpy"])
    assert run.codes() == [0, 0, 0, 0, 0, 0, 700, 700]


def test_after_seconds(fault_build):
    run = run_probe(fault_build, ["setup", "arm:xid=46;after_seconds=0.3", Q, "until:702:" + Q])
    assert run.codes(Q) == [0]
    line = run.line("until")
    assert line.startswith(f"until {Q} 702 after ")
    assert float(line.split()[-1]) >= 250, "no failure before 0.3 s after arming"


def test_probability_is_seeded_and_deterministic(fault_build):
    ops = ["setup", "arm:code=909;sticky=0;prob=0.3;seed=7;functions=cuStreamQuery", *[Q] * 200]
    first = run_probe(fault_build, ops).codes(Q)
    again = run_probe(fault_build, ops).codes(Q)
    other = run_probe(fault_build, [ops[0], ops[1].replace("seed=7", "seed=8"), *ops[2:]]).codes(Q)
    failures = sum(1 for rc in first if rc == 909)
    assert 30 <= failures <= 90, failures
    assert set(first) == {0, 909}
    assert first == again, "the same seed gives the same decisions"
    assert first != other
    never = run_probe(fault_build, ["setup", "arm:code=909;prob=0", *[Q] * 50])
    assert set(never.codes(Q)) == {0}


def test_device_scope(fault_build):
    run = run_probe(fault_build, ["setup", "arm:xid=94;device=1;functions=cuMemcpy,cudaMalloc",
                                  "dl:cuMemcpy", "rt:cudaMalloc", "device:1", "dl:cuMemcpy",
                                  "rt:cudaMalloc", "dl:cuDeviceGet", "device:0", "dl:cuMemcpy",
                                  "rt:cudaMalloc", "device:1"])
    devices = [line for line in run.lines if line.startswith("device ")]
    # device 0 is out of scope; on device 1 the fault fires and latches for that device only;
    # cuDeviceGet(ordinal 0): the call's device argument decides; switching back to device 0
    # works (context switches are never device-scoped) and device 0 keeps working.
    assert run.codes() == [0, 0, 214, 214, 0, 0, 0]
    assert devices == ["device 0", "device 0", "device 214"]


def test_function_patterns_match_base_names(fault_build):
    run = run_probe(fault_build, ["setup", "arm:code=2;sticky=0;functions=cuMemAlloc, cudaMemset*",
                                  "dl:cuMemAlloc_v2", "pa:cuMemAlloc_v2", "dl:cuMemFree_v2",
                                  "rt:cudaMemset_ptds", "rt:cudaMemsetAsync", "rt:cudaMemcpy"])
    assert run.codes() == [2, 2, 0, 2, 2, 0]


def test_xid79_fails_initialization_with_no_device(fault_build):
    run = run_probe(fault_build, ["arm:xid=79", "devcount", "dl:cuInit", "dl:cuDeviceGetCount",
                                  "dl:cuStreamQuery"])
    assert run.line("devcount") == "devcount 100 0", "count set to 0"
    assert run.codes() == [100, 100, 999]
    # Other XIDs leave initialization alone, before and after firing.
    run = run_probe(fault_build, ["setup", "arm:xid=48", "devcount", "dl:cuMemcpy", "devcount", "dl:cuInit"])
    assert [l for l in run.lines if l.startswith("devcount")] == ["devcount 0 2", "devcount 0 2"]
    assert run.codes() == [214, 0]


def test_one_decision_per_user_call(fault_build):
    """The runtime's (and the fake driver's own) nested driver calls are not counted again."""
    run = run_probe(fault_build, ["setup", "arm:code=701;after_calls=1;sticky=0", "rt:cudaMemcpy",
                                  "rt:cudaMemcpy", "arm:code=701;after_calls=1;sticky=0",
                                  "dl:cuMemcpyAsync", "dl:cuMemcpyAsync"])
    assert run.codes() == [0, 701, 0, 701]


def test_transient_failures_are_exact_under_threads(fault_build):
    run = run_probe(fault_build, ["setup", "arm:code=909;transient=5;functions=cuStreamQuery",
                                  "threads:8:50:" + Q, Q])
    assert run.line("threads") == f"threads {Q} ok=395 failed=5"
    assert run.codes(Q) == [0]


def test_delay_blocks_the_firing_call(fault_build):
    run = run_probe(fault_build, ["setup", "arm:xid=119;delay_ms=250", "bench:1:" + Q, "bench:1:" + Q])
    first, second = (float(l.split()[-1]) for l in run.lines if l.startswith("bench"))
    assert first >= 0.25e9
    assert second < 0.2e9, "only the call that fires waits"


def test_json_log(fault_build, tmp_path):
    log = tmp_path / "fault.jsonl"
    run_probe(fault_build, ["setup", "arm:code=701;transient=2;functions=cuMemcpy*", "dl:cuMemcpy",
                            "dl:cuMemcpyAsync", "dl:cuMemcpy", "arm:xid=48", "rt:cudaMalloc", "dl:cuMemcpy",
                            "rt:cudaMalloc", "reset"],
              extra={"LLMDD_FAULT_LOG_JSON": str(log)})
    events = [json.loads(line) for line in log.read_text().splitlines()]
    names = [e["event"] for e in events]
    assert names == ["armed", "fired", "inject", "inject", "recovered", "armed", "fired", "inject",
                     "inject", "disarmed"], names
    fired = events[1]
    assert fired["code"] == 701 and fired["error"] == "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"
    assert fired["fn"] == "cuMemcpy" and fired["mode"] == "transient" and fired["call"] == 1
    assert events[6]["xid"] == 48 and events[6]["fn"] == "cudaMalloc"
    # Sticky: one inject line per function per episode (cudaMalloc twice -> once).
    assert [e["fn"] for e in events[7:9]] == ["cudaMalloc", "cuMemcpy"]
    assert all(e["pid"] == events[0]["pid"] for e in events)
