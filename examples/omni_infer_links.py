# SPDX-License-Identifier: Apache-2.0
"""The link life cycle of omni-infer's llmdatadist manager (its DatadistEngine, ServerEngine and
ClientEngine), unchanged, on this library: links made on demand by the decode, recycled by the
prefill with a forced unlink of a cluster it knows only by id, refreshed by the decode (forced
unlink, link again) when a pull fails, and a sleep / wake-up of the decode (unlink everything,
unregister, finalize, init again).

    python examples/omni_infer_links.py           # a prefill (server) and a decode (client) process

Every pull is checked byte for byte. Cluster ids are random 64-bit values, as omni-infer's.
The parent drives both processes line by line over their stdin / stdout.
"""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np

NUM_BLOCKS, BLOCK_BYTES, LAYERS = 16, 4096, 3
LINK_TIMEOUT = 10000  # ms
SYNC_KV_TIMEOUT = 5000  # ms


def buffers(seed):
    """The engine's paged KV as omni-infer registers it: uint8 [blocks, bytes] per layer."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (NUM_BLOCKS, BLOCK_BYTES), dtype=np.uint8) for _ in range(LAYERS)]


class Engine:
    """omni-infer's DatadistEngine: init, on-demand links, forced unlinks, register / unregister."""

    def __init__(self, ld, is_prefill: bool, port: int = 0):
        self.ld = ld
        self.ip = "127.0.0.1"
        self.cid = uuid.uuid4().int & 0xffffffffffffffff
        cfg = ld.LLMConfig()
        cfg.device_id = 0
        cfg.sync_kv_timeout = SYNC_KV_TIMEOUT
        cfg.enable_remote_cache_accessible = True
        cfg.local_comm_res = ""
        if is_prefill:
            cfg.listen_ip_info = f"{self.ip}:{port}"
        role = ld.LLMRole.PROMPT if is_prefill else ld.LLMRole.DECODER
        self.engine = ld.LLMDataDist(role, self.cid)
        self.cfg = cfg.generate_options()
        self.engine.init(self.cfg)
        self.is_prefill = is_prefill
        self.caches = {}
        self.links = {}  # cid -> last use

    def _make_info(self, cid, ip=None, port=None):
        info = self.ld.LLMClusterInfo()
        info.remote_cluster_id = cid
        if None not in [ip, port]:
            info.append_remote_ip_info(ip, port)
            info.append_local_ip_info(self.ip, 0)
        return info

    def link(self, cid, ip=None, port=None) -> bool:
        if None not in [ip, port] and cid not in self.links:
            ret, _ = self.engine.link_clusters([self._make_info(cid, ip, port)], timeout=LINK_TIMEOUT)
            if ret != self.ld.LLMStatusCode.LLM_SUCCESS:
                print(f"link failed: {ret}", flush=True)
                return False
        self.links[cid] = time.time()
        return True

    def unlink(self, cid, ip=None, port=None):
        self.links.pop(cid, None)
        ret, rets = self.engine.unlink_clusters([self._make_info(cid, ip, port)], timeout=LINK_TIMEOUT, force=True)
        assert ret == self.ld.LLMStatusCode.LLM_SUCCESS, (ret, rets)

    def clear(self, cids=None):
        """Recycles links: a forced unlink of clusters known only by id (no ip info)."""
        expired = list(self.links) if cids is None else cids
        for cid in expired:
            self.links.pop(cid, None)
        if expired:
            ret, rets = self.engine.unlink_clusters([self._make_info(cid) for cid in expired], timeout=LINK_TIMEOUT,
                                                    force=True)
            assert ret == self.ld.LLMStatusCode.LLM_SUCCESS, (ret, rets)

    def register(self, bufs):
        desc = self.ld.CacheDesc(num_tensors=len(bufs), shape=tuple(bufs[0].shape), data_type=self.ld.DataType.DT_UINT8)
        key = self.ld.BlocksCacheKey(self.engine.cluster_id, model_id=len(self.caches)) if self.is_prefill else None
        cache = self.engine.cache_manager.register_blocks_cache(desc, [b.ctypes.data for b in bufs], key)
        self.caches[len(self.caches)] = cache
        return cache

    def unregister(self):
        for cache in self.caches.values():
            self.engine.cache_manager.unregister_cache(cache.cache_id)
        self.caches.clear()

    def sleep(self):
        self.clear()
        self.unregister()
        self.engine.finalize()

    def wakeup(self):
        self.engine.init(self.cfg)


def server(port: int) -> int:
    import llm_datadist as ld
    engine = Engine(ld, True, port)
    engine.register(buffers(seed=7))
    print(f"addr {engine.ip}:{port}:{engine.cid}", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "recycle":  # the decode's link is stale: drop it by cluster id
            engine.clear([int(command[1])])
            print("recycled", flush=True)
        elif command[0] == "exit":
            break
    engine.engine.finalize()
    return 0


def client() -> int:
    import llm_datadist as ld
    engine = Engine(ld, False)
    source = buffers(seed=7)
    local = [np.zeros_like(b) for b in source]
    engine.register(local)
    print(f"cid {engine.cid}", flush=True)
    retryable = [ld.LLMStatusCode.LLM_REPEAT_REQUEST, ld.LLMStatusCode.LLM_CLUSTER_NUM_EXCEED_LIMIT,
                 ld.LLMStatusCode.LLM_PROCESSING_LINK, ld.LLMStatusCode.LLM_DEVICE_OUT_OF_MEMORY,
                 ld.LLMStatusCode.LLM_TIMEOUT, ld.LLMStatusCode.LLM_WAIT_PROCESS_TIMEOUT, ld.LLMStatusCode.LLM_LINK_BUSY]

    def pull_blocks(addr, p_blocks, d_blocks) -> str:
        ip, port, cid = addr.split(":")
        port, cid = int(port), int(cid)
        refreshed = False
        for attempt in range(3):  # ClientEngine.LINK_RETRIES + 1
            if engine.link(cid, ip, port):
                try:
                    engine.engine.cache_manager.pull_blocks(ld.BlocksCacheKey(cid, 0), engine.caches[0], p_blocks,
                                                            d_blocks)
                    ok = all(np.array_equal(dst[d_blocks], src[p_blocks]) for dst, src in zip(local, source))
                    return ("bytes equal" if ok else "BYTES DIFFER") + (" after a link refresh" if refreshed else "")
                except ld.LLMException as e:
                    if e.status_code in retryable:
                        time.sleep(0.2)
                        continue
                    print(f"pull failed ({e.status_code}): refreshing the link", flush=True)
            engine.unlink(cid, ip, port)
            refreshed = True
        return "PULL FAILED"

    for line in sys.stdin:
        command = line.split()
        if command[0] == "pull":
            print(f"pull {command[2]}: {pull_blocks(command[1], [1, 4, 9], [int(command[2]), 10, 15])}", flush=True)
        elif command[0] == "await_unlinked":
            # The prefill's forced unlink reaches this end a few ms later; omni-infer's next pull
            # would come much later. Wait (bounded) so the next pull meets the recycled link.
            cid, deadline = int(command[1]), time.monotonic() + 5.0
            while time.monotonic() < deadline:
                try:
                    if engine.engine.link_info(cid)["state"] != "active":
                        break
                except ld.LLMException:   # no link at all: also gone
                    break
                time.sleep(0.005)
            print("unlinked seen", flush=True)
        elif command[0] == "sleep":  # sleep / wake-up as omni-infer's CacheManager does it
            engine.sleep()
            engine.wakeup()
            engine.register(local)
            print("woke up", flush=True)
        elif command[0] == "exit":
            break
    engine.sleep()
    return 0


def main() -> int:
    if len(sys.argv) >= 2 and sys.argv[1] == "server":
        return server(int(sys.argv[2]))
    if len(sys.argv) >= 2 and sys.argv[1] == "client":
        return client()
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = {name: subprocess.Popen([sys.executable, __file__, name, str(port)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True) for name in ("server", "client")}
    server_p, client_p = procs["server"], procs["client"]

    def tell(p, line):
        p.stdin.write(line + "\n")
        p.stdin.flush()

    def expect(p, prefix):
        while True:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"process ended before printing {prefix!r}")
            print(line.rstrip())
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    try:
        addr = expect(server_p, "addr")
        client_cid = expect(client_p, "cid")
        tell(client_p, f"pull {addr} 0")
        results = [expect(client_p, "pull 0")]
        tell(server_p, f"recycle {client_cid}")
        expect(server_p, "recycled")
        tell(client_p, f"await_unlinked {addr.split(':')[2]}")
        expect(client_p, "unlinked seen")
        tell(client_p, f"pull {addr} 2")
        results.append(expect(client_p, "pull 2"))
        tell(client_p, "sleep")
        expect(client_p, "woke")
        tell(client_p, f"pull {addr} 3")
        results.append(expect(client_p, "pull 3"))
        tell(client_p, "exit")
        tell(server_p, "exit")
        rcs = {name: p.wait(timeout=60) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    print(f"server exited {rcs['server']}, client exited {rcs['client']}")
    ok = all(r.startswith(": bytes equal") for r in results) and "link refresh" in results[1]
    print("omni-infer link life cycle: " + ("every pull equal" if ok else f"FAILED: {results}"))
    return 0 if ok and all(rc == 0 for rc in rcs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
