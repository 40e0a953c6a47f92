# SPDX-License-Identifier: Apache-2.0
"""A prefill or decode worker process of the serve demo.

    python -m llm_datadist._serve_demo.worker CONFIG_JSON

Reads JSON requests on stdin, answers JSON lines on stdout (the protocol channel; everything
else printed goes to stderr, where log lines land as JSON when LLMDD_LOG_FORMAT=json). Every
request carries an "id" that its answer repeats.

prefill ops: prefill {request_id, prompt} -> {first_token, kv_transfer_params, kv_digest, prefill_ms}
             ping, stats, quit (a request's blocks are freed when the decode pulled its ticket, or
             at the expiry: the connector's consumed notice, over the link)
decode ops:  add_peer {payload} (handshake: hash checked, then link), relink {cluster_id},
             decode {request_id, prompt, max_new_tokens, first_token, kv_transfer_params, inject_fault}
             -> {tokens, transfer_ms, recompute_ms, first_decode_ms, decode_ms, t_first_token,
                 kv_digest, load_error_blocks, transfer}, ping, stats, quit

Both roles use the connector's core (llm_datadist.integrations: ConnectorScheduler and
ConnectorWorker, the halves vLLM's LLMDataDistConnector drives) for everything that crosses
processes.
"""
from __future__ import annotations

import json
import os
import select
import sys
import time
from dataclasses import asdict
from typing import Any, Dict, List

__all__ = ["main"]


class _Request:
    """The fields of an engine request the connector's scheduler half reads."""

    def __init__(self, request_id: str, prompt_token_ids: List[int], kv_transfer_params: Any) -> None:
        self.request_id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.kv_transfer_params = kv_transfer_params


def _options(ld: Any, conf: Dict[str, Any], backend: str) -> Dict[str, str]:
    cfg = ld.LLMConfig()
    cfg.device_id = 0
    cfg.enable_cache_manager = True
    cfg.host_mem_pool_cfg = json.dumps({"memory_size": conf["pool_bytes"]})
    cfg.mem_pool_cfg = json.dumps({"memory_size": conf["pool_bytes"]})
    cfg.device_backend = backend
    cfg.sync_kv_timeout = int(conf["sync_kv_timeout_ms"])
    if conf["role"] == "prefill":
        cfg.listen_ip_info = f"{conf['host']}:{conf['port']}"
    return cfg.generate_options()


def _error(exc: BaseException, **extra: Any) -> Dict[str, Any]:
    to_dict = getattr(exc, "to_dict", None)
    err = to_dict() if callable(to_dict) else {"ok": False, "code": None, "message": str(exc)}
    err["type"] = type(exc).__name__
    err.update(extra)
    return err


def main(argv: List[str]) -> int:
    conf = json.loads(argv[0])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def reply(msg_id: Any, **kw: Any) -> None:
        proto.write(json.dumps({"id": msg_id, **kw}) + "\n")

    import torch
    torch.set_num_threads(int(conf.get("threads", 1)))
    import llm_datadist as ld
    from llm_datadist import fault_injection as fi
    from llm_datadist.integrations import ConnectorConfig, ConnectorScheduler, ConnectorWorker, KVCacheLayout

    from .model import BlockAllocator, ModelConfig, TinyDecoder, kv_digest

    role = conf["role"]
    prefill = role == "prefill"
    device = conf.get("device", "cpu")
    cuda_torch = device.startswith("cuda")
    mcfg = ModelConfig(**conf["model"])
    try:
        model = TinyDecoder(mcfg, device)
        dd = ld.LLMDataDist(ld.LLMRole.PROMPT if prefill else ld.LLMRole.DECODER, conf["cluster_id"])
        dd.init(_options(ld, conf, "cuda" if (cuda_torch or conf.get("stage_device")) else "cpu"))
        layout = KVCacheLayout(mcfg.num_layers, mcfg.num_kv_heads, mcfg.head_dim, mcfg.block_size, "DT_FLOAT")
        ccfg = ConnectorConfig(layout, conf["cluster_id"], conf["host"], conf.get("port", 0) if prefill else 0,
                               engine_id=f"{role}-{conf['cluster_id']}", model_name=f"tiny-decoder-seed{mcfg.seed}",
                               free_timeout_s=conf["free_timeout_s"], link_timeout_ms=conf["link_timeout_ms"])
        sched = ConnectorScheduler(ccfg)
        conn = ConnectorWorker(ccfg, dd)
        nb = conf["num_blocks"]
        placement = ld.Placement.DEVICE if cuda_torch else ld.Placement.HOST
        desc = ld.CacheDesc(layout.num_tensors, layout.tensor_shape(nb), ld.DataType.DT_FLOAT, placement)
        cache = dd.cache_manager.allocate_blocks_cache(desc, ld.BlocksCacheKey(conf["cluster_id"], 0) if prefill else None)
        staging = None
        if conf.get("stage_device") and not prefill:
            staging = dd.cache_manager.allocate_blocks_cache(
                ld.CacheDesc(layout.num_tensors, layout.tensor_shape(nb), ld.DataType.DT_FLOAT, ld.Placement.DEVICE))
        conn.register_kv_caches(cache, staging=staging)
        kv = [cache.torch(i) for i in range(layout.num_tensors)]        # K0, V0, K1, V1, ... (zero-copy)
        for t in kv:
            t.zero_()
        alloc = BlockAllocator(nb)
    except Exception as exc:  # noqa: BLE001 - reported to the driver
        reply(0, ok=False, error=_error(exc))
        return 1

    def sync() -> None:
        if cuda_torch:
            torch.cuda.synchronize()

    held: Dict[str, List[int]] = {}

    def reap() -> None:
        sending, _ = conn.get_finished()
        for rid in sending:
            alloc.free(held.pop(rid, []))

    def do_prefill(msg: Dict[str, Any]) -> Dict[str, Any]:
        rid, prompt = msg["request_id"], msg["prompt"]
        req = _Request(rid, prompt, {"do_remote_decode": True})
        blocks = alloc.alloc(layout.blocks_for(len(prompt)))
        t0 = time.perf_counter()
        first = model.prefill(prompt, kv, blocks)
        sync()
        prefill_ms = (time.perf_counter() - t0) * 1e3
        _, params = sched.request_finished(req, blocks)
        held[rid] = blocks
        conn.bind_connector_metadata(sched.build_connector_meta())
        conn.clear_connector_metadata()
        return {"first_token": first, "kv_transfer_params": params, "prefill_ms": prefill_ms,
                "kv_digest": kv_digest(kv, blocks), "held": len(held)}

    def wait_loaded(rid: str, n_ext: int) -> None:
        """The load runs on the connector's thread; an engine would step meanwhile, this
        one-request-at-a-time worker waits for get_finished to report it (bounded)."""
        if not n_ext:
            return
        deadline = time.monotonic() + conf.get("load_deadline_s", 60.0)
        while time.monotonic() < deadline:
            _, recving = conn.get_finished()
            if rid in recving:
                return
            time.sleep(0.0005)
        raise TimeoutError(f"the load of {rid} did not end within {conf.get('load_deadline_s', 60.0)} s")

    def do_decode(msg: Dict[str, Any]) -> Dict[str, Any]:
        rid, prompt, max_new = msg["request_id"], msg["prompt"], int(msg["max_new_tokens"])
        req = _Request(rid, prompt, msg.get("kv_transfer_params"))
        n_ext, _ = sched.get_num_new_matched_tokens(req, 0)
        blocks = alloc.alloc(layout.blocks_for(len(prompt) + max_new))
        try:
            sched.update_state_after_alloc(req, blocks[:layout.blocks_for(len(prompt))], n_ext)  # the prompt's
            conn.bind_connector_metadata(sched.build_connector_meta())
            t0 = time.perf_counter()
            if msg.get("inject_fault"):
                with fi.armed(**msg["inject_fault"]):        # a fault drill: needs the shim preloaded
                    conn.start_load_kv()
                    wait_loaded(rid, n_ext)
            else:
                conn.start_load_kv()
                wait_loaded(rid, n_ext)
            sync()
            transfer_ms = (time.perf_counter() - t0) * 1e3 if n_ext else 0.0
            conn.clear_connector_metadata()
            bad = conn.get_block_ids_with_load_errors()
            rec = conn.pop_transfer(rid)
            prompt_blocks = blocks[:layout.blocks_for(len(prompt))]
            digest = kv_digest(kv, prompt_blocks) if n_ext and not bad else None
            first = msg.get("first_token")
            recompute_ms = 0.0
            source = "pulled"
            if not n_ext or bad:
                # No remote KV, or its load failed: recompute the prompt's KV here (a superset of
                # the failed blocks), as an engine does with get_block_ids_with_load_errors().
                t1 = time.perf_counter()
                local_first = model.prefill(prompt, kv, blocks)
                sync()
                recompute_ms = (time.perf_counter() - t1) * 1e3
                first = local_first if first is None else first
                source = "recomputed" if not n_ext else "recomputed_after_load_error"
            t2 = time.perf_counter()
            tokens = [int(first)]
            first_decode_ms, t_first = 0.0, time.monotonic()
            for step in range(max_new - 1):
                tokens.append(model.decode_step(tokens[-1], len(prompt) + step, kv, blocks))
                if step == 0:
                    sync()
                    first_decode_ms = (time.perf_counter() - t2) * 1e3
                    t_first = time.monotonic()
            sync()
            decode_ms = (time.perf_counter() - t2) * 1e3
        finally:
            alloc.free(blocks)
        return {"tokens": tokens, "transfer_ms": transfer_ms, "recompute_ms": recompute_ms,
                "first_decode_ms": first_decode_ms, "decode_ms": decode_ms, "t_first_token": t_first,
                "kv_digest": digest, "load_error_blocks": sorted(bad), "kv_source": source,
                "transfer": asdict(rec) if rec else None}

    reply(0, ok=True, ready=True, pid=os.getpid(), role=role, cluster_id=conf["cluster_id"],
          handshake=conn.get_handshake_metadata().to_dict() if prefill else None,
          compatibility_hash=conn.compatibility_hash)
    fd = sys.stdin.fileno()
    buf = b""
    try:
        while True:
            if prefill:
                reap()
            if not select.select([fd], [], [], 0.1)[0]:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break                                    # the driver is gone
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                op, mid = msg.get("op"), msg.get("id")
                try:
                    if op == "quit":
                        reply(mid, ok=True)
                        return 0
                    if op == "ping":
                        reply(mid, ok=True, pid=os.getpid())
                    elif op == "stats":
                        reap()
                        reply(mid, ok=True, held=sorted(held), free_blocks=alloc.free_count,
                              expired=sorted(conn.expired))
                    elif op == "prefill" and prefill:
                        reply(mid, ok=True, **do_prefill(msg))
                    elif op == "decode" and not prefill:
                        reply(mid, ok=True, **do_decode(msg))
                    elif op == "add_peer" and not prefill:
                        agent = conn.add_remote_agent(msg["payload"])
                        reply(mid, ok=True, peer=agent.cluster_id, transport=dd.link_info(agent.cluster_id)["transport"])
                    elif op == "relink" and not prefill:
                        reply(mid, ok=conn.relink(int(msg["cluster_id"])))
                    else:
                        reply(mid, ok=False, error={"type": "ValueError", "message": f"unknown op {op!r} for {role}"})
                except Exception as exc:  # noqa: BLE001 - every failure is an answer
                    reply(mid, ok=False, error=_error(exc, request_id=msg.get("request_id")))
    finally:
        del kv
        conn.shutdown()
        dd.finalize()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
