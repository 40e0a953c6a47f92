#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpora of the fuzz harnesses: fuzz/corpus/<harness>/seed-*.

Seeds are valid (or nearly valid) inputs, from which coverage-guided fuzzing starts. They are
generated rather than recorded so that a protocol change means editing the encoders below
and running this again; stale seeds still work, only less well. The protocol version is read
from csrc/link/wire.h. Reproducers kept as seeds (regress-*) are left alone.

The caches the request seeds name are those of ServingEngine in fuzz/fuzz_support.h.
"""
import pathlib
import re
import struct

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"

MAGIC = 0x4C4C4444
VERSION = int(re.search(r"kProtocolVersion\s*=\s*(\d+)", (ROOT / "csrc/link/wire.h").read_text()).group(1))

HELLO, AUTH = 1, 3
PULL, PULL_REPLY, PUSH, RELEASE, PUSH_COMPLETE, UNLINK, HEARTBEAT = 10, 11, 12, 14, 15, 20, 30
INVALID_ID = 2**64 - 1

# ServingEngine (fuzz_support.h): the owner's cluster and its caches.
SERVER_CLUSTER = 1
BLOCKS_CACHE, BLOCKS_MODEL, BLOCK_BYTES, BLOCKS, BLOCKS_TENSORS = 1, 7, 32, 8, 2
SMALL_CACHE, SMALL_STRIDE, SMALL_SLOTS = 2, 16, 2  # 1 tensor
HOST_CACHE, KEYED_CACHE, KEYED_STRIDE, KEYED_TENSORS = 3, 4, 64, 2  # HOST_CACHE: KEYED_CACHE's shape, no keys
REQ_KEYS, PREFIX_KEY = (100, 101), 200

SLOT_TO_SLOT, BLOCKS_TO_BLOCKS, SLOT_TO_BLOCKS = 0, 1, 2
CACHE_KEY, ID_AND_INDEX, BLOCKS_KEY, ADDRESS = 0, 1, 2, 3  # RemoteKeyKind
DESCRIBE, STREAM = 0, 1


def frame(ftype, payload=b"", request_id=1, data=b"", data_bytes=None, version=VERSION, magic=MAGIC):
    if data_bytes is None:
        data_bytes = len(data)
    return struct.pack("<IHHQQQ", magic, version, ftype, request_id, len(payload), data_bytes) + payload + data


def request(key_kind, layout, delivery, *, req_id=INVALID_ID, prefix_id=INVALID_ID, model_id=0, cache_id=-1,
            batch_index=0, all_tensors=1, tensor_begin=0, tensor_count=0, size=0, whole_slot=0, chunk_bytes=0,
            chunk_count=0, blocks=(), timeout_ms=1000, push_bytes=0):
    """A TransferRequest (csrc/link/messages.h), fields in Encode() order."""
    out = struct.pack("<BQQQqIBBBIIQBQI", key_kind, req_id, prefix_id, model_id, cache_id, batch_index, layout,
                      delivery, all_tensors, tensor_begin, tensor_count, size, whole_slot, chunk_bytes, chunk_count)
    return (out + struct.pack("<I", len(blocks)) + b"".join(struct.pack("<Q", b) for b in blocks)
            + struct.pack("<I", timeout_ms) + struct.pack("<Q", push_bytes))


def push_complete(push_request_id, success=1):
    """A PushComplete (csrc/link/messages.h, protocol 6): the described push it ends, and how."""
    return struct.pack("<QB", push_request_id, success)


def requests():
    """Valid requests for each layout, key kind and delivery, by name."""
    out = {}
    for delivery, dname in ((DESCRIBE, "describe"), (STREAM, "stream")):
        out[f"slot-cachekey-req-{dname}"] = request(CACHE_KEY, SLOT_TO_SLOT, delivery, req_id=REQ_KEYS[0],
                                                    tensor_count=KEYED_TENSORS, size=KEYED_STRIDE, whole_slot=1)
        out[f"slot-cachekey-prefix-part-{dname}"] = request(
            CACHE_KEY, SLOT_TO_SLOT, delivery, prefix_id=PREFIX_KEY, all_tensors=0, tensor_begin=1, tensor_count=1,
            size=KEYED_STRIDE // 2)
        out[f"slot-idindex-{dname}"] = request(ID_AND_INDEX, SLOT_TO_SLOT, delivery, cache_id=SMALL_CACHE,
                                               batch_index=1, tensor_count=1, size=SMALL_STRIDE, whole_slot=1)
        out[f"blocks-blockskey-{dname}"] = request(BLOCKS_KEY, BLOCKS_TO_BLOCKS, delivery, model_id=BLOCKS_MODEL,
                                                   tensor_count=BLOCKS_TENSORS, chunk_bytes=BLOCK_BYTES,
                                                   blocks=(0, 3, 7))
        out[f"blocks-idindex-{dname}"] = request(ID_AND_INDEX, BLOCKS_TO_BLOCKS, delivery, cache_id=BLOCKS_CACHE,
                                                 all_tensors=0, tensor_begin=1, tensor_count=1,
                                                 chunk_bytes=BLOCK_BYTES, blocks=(1,))
        out[f"slot2blocks-cachekey-{dname}"] = request(CACHE_KEY, SLOT_TO_BLOCKS, delivery, req_id=REQ_KEYS[1],
                                                       tensor_count=KEYED_TENSORS, chunk_bytes=16, chunk_count=4)
        out[f"slot2blocks-idindex-{dname}"] = request(ID_AND_INDEX, SLOT_TO_BLOCKS, delivery, cache_id=HOST_CACHE,
                                                      batch_index=3, tensor_count=KEYED_TENSORS, chunk_bytes=32,
                                                      chunk_count=1)
    return out


def push_requests():
    """Pushes with the data bytes they carry (described ones, protocol 6, carry none: push_bytes
    says what they would write)."""
    return {
        "push-describe-idindex-slot": (request(ID_AND_INDEX, SLOT_TO_SLOT, DESCRIBE, cache_id=SMALL_CACHE,
                                               batch_index=1, tensor_count=1, size=SMALL_STRIDE, whole_slot=1,
                                               push_bytes=SMALL_STRIDE), 0),
        "push-describe-blockskey-blocks": (request(BLOCKS_KEY, BLOCKS_TO_BLOCKS, DESCRIBE, model_id=BLOCKS_MODEL,
                                                   tensor_count=BLOCKS_TENSORS, chunk_bytes=BLOCK_BYTES,
                                                   blocks=(3, 4), push_bytes=2 * BLOCKS_TENSORS * BLOCK_BYTES), 0),
        "push-idindex-slot": (request(ID_AND_INDEX, SLOT_TO_SLOT, STREAM, cache_id=SMALL_CACHE, batch_index=0,
                                      tensor_count=1, size=SMALL_STRIDE, whole_slot=1), SMALL_STRIDE),
        "push-blockskey-blocks": (request(BLOCKS_KEY, BLOCKS_TO_BLOCKS, STREAM, model_id=BLOCKS_MODEL,
                                          tensor_count=BLOCKS_TENSORS, chunk_bytes=BLOCK_BYTES, blocks=(2, 5)),
                                  2 * BLOCKS_TENSORS * BLOCK_BYTES),
        # a contiguous slot pushed into blocks, the last one in part (protocol 5: size = its bytes)
        "push-blockskey-blocks-partial-last": (request(BLOCKS_KEY, BLOCKS_TO_BLOCKS, STREAM, model_id=BLOCKS_MODEL,
                                                       tensor_count=BLOCKS_TENSORS, size=BLOCK_BYTES // 4,
                                                       chunk_bytes=BLOCK_BYTES, blocks=(6, 1)),
                                               BLOCKS_TENSORS * (BLOCK_BYTES + BLOCK_BYTES // 4)),
        # TransferConfig's destination by address (protocol 4); the harness's addresses differ per
        # run, so this one reaches the owner's address lookup and its refusal
        "push-address-slot": (request(ADDRESS, SLOT_TO_SLOT, STREAM, all_tensors=0, tensor_count=1,
                                      size=SMALL_STRIDE, whole_slot=1, blocks=(0x7F0000001000,)), SMALL_STRIDE),
    }


def frame_seeds():
    seeds = {"heartbeat": frame(HEARTBEAT, request_id=0), "unlink": frame(UNLINK, request_id=9),
             "release": frame(RELEASE, b"\x01", request_id=5),
             "reply-nobody-waits-for": frame(PULL_REPLY, b"\x00" * 12, request_id=77, data=b"x" * 40)}
    for name, payload in requests().items():
        seeds["pull-" + name] = frame(PULL, payload, request_id=3)
    for name, (payload, nbytes) in push_requests().items():
        seeds[name] = frame(PUSH, payload, request_id=4, data=bytes(i & 0xFF for i in range(nbytes)))
    # A complete pull and its release: consumes a req key.
    seeds["pull-release-consumes"] = (frame(PULL, requests()["slot-cachekey-req-describe"], request_id=6) +
                                      frame(RELEASE, b"\x01", request_id=6))
    seeds["several"] = (frame(HEARTBEAT, request_id=0) + frame(PULL, requests()["blocks-blockskey-stream"], 8) +
                        seeds["push-idindex-slot"] + frame(HEARTBEAT, request_id=0) + frame(UNLINK, request_id=10))
    # A described push and its completion (protocol 6), and a completion of nothing.
    seeds["push-describe-complete"] = (frame(PUSH, push_requests()["push-describe-idindex-slot"][0], request_id=11) +
                                       frame(PUSH_COMPLETE, push_complete(11), request_id=12))
    seeds["push-complete-unknown"] = frame(PUSH_COMPLETE, push_complete(99, 0), request_id=13)
    seeds["old-version"] = frame(HEARTBEAT, version=1)
    return seeds


def request_seeds():
    """request_fuzz input: a mode byte (0 pull, 1 push, 2 release, 3 pull + release), then the payload."""
    seeds = {}
    for name, payload in requests().items():
        seeds["pull-" + name] = bytes([0]) + payload
        seeds["pull-release-" + name] = bytes([3 | 4]) + payload  # release with success
    for name, (payload, nbytes) in push_requests().items():
        seeds[name] = bytes([1]) + struct.pack("<H", nbytes) + payload
    seeds["release"] = bytes([2, 1])
    return seeds


def hello(client_id=2, expected_id=SERVER_CLUSTER, has_secret=0):
    """The client's kHello (ClientHandshake in csrc/link/link_manager.cc): ids, nonce, secret flag."""
    payload = struct.pack("<QQ", client_id, expected_id) + bytes(range(16)) + struct.pack("<B", has_secret)
    return frame(HELLO, payload, request_id=0)


def auth(mac=b"\x00" * 32, regions=(), boot_id=b"not-this-host", pid=4242):
    """The client's kAuth: mac, boot id, pid, regions (id, kind, size, has_memfd, has_ipc, 64-byte
    ipc handle)."""
    payload = mac + struct.pack("<I", len(boot_id)) + boot_id + struct.pack("<iI", pid, len(regions))
    for region_id, kind, size, has_memfd, has_ipc in regions:
        payload += struct.pack("<BBQBB", region_id, kind, size, has_memfd, has_ipc) + b"\x00" * 64
    return frame(AUTH, payload, request_id=0)


def handshake_seeds():
    """handshake_fuzz input: a mode byte (bit 0: the server has a secret), then the client's stream."""
    open_server, secret_server = b"\x00", b"\x01"
    pull = frame(PULL, requests()["slot-cachekey-req-describe"], request_id=3)
    return {
        "hello-only": open_server + hello(),
        "complete": open_server + hello() + auth(),
        "complete-then-frames": open_server + hello() + auth() + frame(HEARTBEAT, request_id=0) + pull +
                                frame(UNLINK, request_id=4),
        "complete-with-regions": open_server + hello() + auth(regions=((0, 0, 1 << 20, 1, 0), (1, 2, 4096, 0, 1))),
        "wrong-server-id": open_server + hello(expected_id=99),
        "own-cluster-id": open_server + hello(client_id=SERVER_CLUSTER),
        "secret-mismatch": open_server + hello(has_secret=1),
        "secret-wrong-mac": secret_server + hello(has_secret=1) + auth(mac=b"\x5a" * 32),
        "secret-missing": secret_server + hello(has_secret=0) + auth(),
        "old-version": open_server + frame(HELLO, b"", version=1),
        "not-a-hello": open_server + frame(AUTH, b"\x00" * 37),
    }


def main():
    for harness, seeds in (("frame_fuzz", frame_seeds()), ("request_fuzz", request_seeds()),
                           ("handshake_fuzz", handshake_seeds())):
        directory = CORPUS / harness
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
        print(f"{directory.relative_to(ROOT)}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
