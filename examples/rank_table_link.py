# SPDX-License-Identifier: Apache-2.0
"""The call sequence of vllm-ascend's LLMDataDistCMgrConnector, unchanged, on this library:
register paged KV with register_blocks_cache, link with an HCCL rank table, poll
query_register_mem_status until OK, pull_blocks, unlink, finalize.

    python examples/rank_table_link.py            # a prefill and a decode process on this host
    python examples/rank_table_link.py --mla      # its MLA path: one layer, two 1-tensor caches

--mla is the connector's MLA case as it is written: the latent cache (k_normed) and the rope
cache (k_pe) registered as two blocks caches of one tensor per layer (BlocksCacheKey model_id 0
and 1), a version 1.2 rank table without ports, and pull_blocks with default arguments
(tensor_num_per_layer=2 on a 1-tensor cache, as upstream accepts).

The parent starts both roles as child processes (cluster 1 = prefill, rank 0; cluster 2 =
decode, rank 1), hands them one rank table, and checks that the decode's pulled blocks equal
the prefill's byte for byte. On Ascend the rank table names NPU device IPs; here `device_ip`
is any address the peer reaches over TCP and `device_port` its port (or LLMDD_COMM_BASE_PORT +
device_id when absent).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

NUM_BLOCKS, BLOCK_TOKENS, KV_HEADS, HEAD_DIM, LAYERS = 32, 16, 2, 64, 2
PREFILL_ID, DECODE_ID = 1, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_rank_table(ports) -> str:
    devices = [{"device_id": str(rank), "device_ip": "127.0.0.1", "rank_id": str(rank), "device_port": str(port)}
               for rank, port in enumerate(ports)]
    return json.dumps({"version": "1.0", "server_count": "1", "status": "completed",
                       "server_list": [{"server_id": "127.0.0.1", "device": devices}]})


def make_vllm_ascend_rank_table() -> str:
    """As vllm-ascend's add_remote_agent builds it for two devices of one server: no ports (each
    member is reached at LLMDD_COMM_BASE_PORT + its device_id)."""
    devices = [{"device_id": str(rank), "device_ip": "127.0.0.1", "rank_id": str(rank)} for rank in (0, 1)]
    return json.dumps({"version": "1.2", "server_count": "1", "status": "completed",
                       "server_list": [{"device": devices, "server_id": "127.0.0.1"}]})


def free_port_pair() -> int:
    """A port p with p and p + 1 both free (the two members of a portless rank table)."""
    for _ in range(100):
        base = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", base + 1))
            return base
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports")


def wait_until_linked(datadist, ld, comm_id: int, timeout_s: float = 60) -> None:
    """Polls query_register_mem_status until OK, as vllm-ascend's add_remote_agent does (it sleeps
    1 s between polls; 50 ms here), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        ret = datadist.query_register_mem_status(comm_id=comm_id)
        if ret == ld.RegisterMemStatus.OK:
            return
        if ret == ld.RegisterMemStatus.FAILED or time.monotonic() > deadline:
            raise RuntimeError(f"Linking failed, comm id: {comm_id}: {datadist.comm_info(comm_id)['error']}")
        time.sleep(0.05)


def report_linked_then_wait(is_prefill: bool) -> None:
    """The prefill says it sees the link; the decode waits for that before it pulls (and later
    unlinks). A serving engine unlinks at shutdown, long after both ends saw the link; a decode
    here that pulled and unlinked within one poll of the listening prefill's status would leave
    the prefill waiting for a link that came and went."""
    if is_prefill:
        print("linked", flush=True)
    else:
        sys.stdin.readline()


def mla_worker(datadist, ld, is_prefill: bool, rank_table: str) -> int:
    """vllm-ascend's MLA path with one layer: k_normed [blocks, tokens, 1, 512] and k_pe
    [blocks, tokens, 1, 64], one tensor each (one layer)."""
    cluster_id = PREFILL_ID if is_prefill else DECODE_ID
    shapes = {0: (NUM_BLOCKS, BLOCK_TOKENS, 1, 512), 1: (NUM_BLOCKS, BLOCK_TOKENS, 1, 64)}  # model_id -> shape
    kv = {model_id: [np.zeros(shape, dtype=np.float16)] for model_id, shape in shapes.items()}  # 1 layer
    if is_prefill:
        rng = np.random.default_rng(1)
        for tensors in kv.values():
            tensors[0][:] = rng.standard_normal(tensors[0].shape).astype(np.float16)
    caches = {}
    for model_id, tensors in kv.items():
        desc = ld.CacheDesc(len(tensors), [*tensors[0].shape], ld.DataType.DT_FLOAT16)
        key = ld.BlocksCacheKey(cluster_id=cluster_id, model_id=model_id)
        caches[model_id] = datadist.cache_manager.register_blocks_cache(desc, [t.ctypes.data for t in tensors], key)
    comm_id = datadist.link("pd_comm_127.0.0.1_127.0.0.1", {PREFILL_ID: 0, DECODE_ID: 1}, rank_table)
    wait_until_linked(datadist, ld, comm_id)
    report_linked_then_wait(is_prefill)
    ok = True
    if is_prefill:
        sys.stdin.readline()  # until the decode has pulled
    else:
        remote_block_ids, local_block_ids = [2, 3, 11], [5, 6, 7]
        datadist.cache_manager.pull_blocks(ld.BlocksCacheKey(cluster_id=PREFILL_ID, model_id=0), caches[0],
                                           remote_block_ids, local_block_ids)
        datadist.cache_manager.pull_blocks(ld.BlocksCacheKey(cluster_id=PREFILL_ID, model_id=1), caches[1],
                                           remote_block_ids, local_block_ids)
        rng = np.random.default_rng(1)
        for tensors in kv.values():
            source = rng.standard_normal(tensors[0].shape).astype(np.float16)
            ok &= bool(np.array_equal(tensors[0][local_block_ids].view(np.uint16),
                                      source[remote_block_ids].view(np.uint16)))
        print(f"decode pulled {len(remote_block_ids)} blocks of a 1-layer MLA cache (k_normed + k_pe): "
              f"{'bytes equal' if ok else 'BYTES DIFFER'}")
    datadist.unlink(comm_id)
    return 0 if ok else 1


def worker(role_name: str, rank_table: str, mla: bool = False) -> int:
    import llm_datadist as ld

    is_prefill = role_name == "prefill"
    cluster_id = PREFILL_ID if is_prefill else DECODE_ID
    config = ld.LLMConfig()
    config.device_id = 0
    config.enable_cache_manager = True
    config.enable_remote_cache_accessible = True
    config.sync_kv_timeout = 5000
    config.link_total_time = 30  # seconds
    datadist = ld.LLMDataDist(ld.LLMRole.PROMPT if is_prefill else ld.LLMRole.DECODER, cluster_id)
    if mla:  # vllm-ascend's init_llm_datadist
        config.enable_switch_role = True
    datadist.init(config.generate_options())
    try:
        if mla:
            return mla_worker(datadist, ld, is_prefill, rank_table)
        # The engine's paged KV: K and V per layer, [blocks, tokens, kv heads, head dim], memory it owns.
        kv = [np.zeros((NUM_BLOCKS, BLOCK_TOKENS, KV_HEADS, HEAD_DIM), dtype=np.float16) for _ in range(2 * LAYERS)]
        if is_prefill:
            rng = np.random.default_rng(0)
            for t in kv:
                t[:] = rng.standard_normal(t.shape).astype(np.float16)
        desc = ld.CacheDesc(len(kv), (NUM_BLOCKS, BLOCK_TOKENS, KV_HEADS, HEAD_DIM), ld.DataType.DT_FLOAT16,
                            ld.Placement.HOST)
        key = ld.BlocksCacheKey(cluster_id, 0) if is_prefill else None
        cache = datadist.cache_manager.register_blocks_cache(desc, [t.ctypes.data for t in kv], key)

        comm_id = datadist.link(f"pd_comm_{PREFILL_ID}_{DECODE_ID}", {PREFILL_ID: 0, DECODE_ID: 1}, rank_table)
        wait_until_linked(datadist, ld, comm_id)
        report_linked_then_wait(is_prefill)

        if is_prefill:
            sys.stdin.readline()  # until the decode has pulled (vllm-ascend: a "finished" message)
        else:
            remote_blocks, local_blocks = [3, 4, 5, 9], [0, 1, 2, 7]
            t0 = time.perf_counter()
            datadist.cache_manager.pull_blocks(ld.BlocksCacheKey(PREFILL_ID, 0), cache, remote_blocks, local_blocks)
            elapsed_us = (time.perf_counter() - t0) * 1e6
            rng = np.random.default_rng(0)  # the prefill's contents, regenerated to compare
            ok = True
            for t in kv:
                source = rng.standard_normal(t.shape).astype(np.float16)
                ok &= bool(np.array_equal(t[local_blocks].view(np.uint16), source[remote_blocks].view(np.uint16)))
            transport = datadist.link_info(PREFILL_ID)["transport"]
            print(f"decode pulled {len(remote_blocks)} blocks x {len(kv)} tensors over {transport} in "
                  f"{elapsed_us:.0f} us: {'bytes equal' if ok else 'BYTES DIFFER'}")
            if not ok:
                return 1
        datadist.cache_manager.unregister_cache(cache.cache_id)
        datadist.unlink(comm_id)
        return 0
    finally:
        datadist.finalize()


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] in ("prefill", "decode"):
        return worker(sys.argv[1], sys.argv[2], mla="--mla" in sys.argv[3:])
    mla = "--mla" in sys.argv[1:]
    env = dict(os.environ)
    if mla:
        table = make_vllm_ascend_rank_table()
        env["LLMDD_COMM_BASE_PORT"] = str(free_port_pair())
    else:
        table = make_rank_table([free_port(), free_port()])
    extra = ["--mla"] if mla else []
    prefill = subprocess.Popen([sys.executable, __file__, "prefill", table, *extra], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    decode = subprocess.Popen([sys.executable, __file__, "decode", table, *extra], stdin=subprocess.PIPE, text=True,
                              env=env)
    prefill_rc = decode_rc = None
    try:
        if prefill.stdout.readline().strip() == "linked":
            decode.stdin.write("go\n")
        decode.stdin.close()  # a prefill that failed to link lets the decode go on and fail too
        decode_rc = decode.wait(timeout=120)
        prefill.stdin.write("done\n")
        prefill.stdin.flush()
        prefill_rc = prefill.wait(timeout=60)
    finally:
        for p in (prefill, decode):
            if p.poll() is None:
                p.kill()
    print(f"prefill exited {prefill_rc}, decode exited {decode_rc}")
    return 0 if prefill_rc == 0 and decode_rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
