# SPDX-License-Identifier: Apache-2.0
"""A hostile peer: a raw TCP client that speaks the link protocol byte by byte, so tests can send
what our own library never would (oversized counts, wrapped products, stale ids, wrong secrets).

    peer = RawPeer.link("127.0.0.1", port, client_id=99, server_id=1)   # no secret, over tcp
    peer.send_frame(FrameType.PULL_REQUEST, 7, pull_request(key_kind=2, layout=1, ...))
    header, payload, data = peer.recv_reply(timeout=5)

It never offers shared memory (an empty boot id reads as "another host"), so every frame and
every byte of data travels on the one TCP connection it holds. The wire layout mirrors
csrc/link/wire.h (frames) and the handshake in csrc/link/link_manager.h; keep them in step.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

FRAME_MAGIC = 0x4C4C4444
try:  # the version this build speaks, unless a test asks for an older one
    from llm_datadist._core import LINK_PROTOCOL_VERSION as _BUILT_VERSION
except ImportError:  # a build from before the attribute: protocol 2
    _BUILT_VERSION = 2
PROTOCOL_VERSION = int(os.environ.get("LLMDD_RAW_PEER_VERSION", _BUILT_VERSION))
HEADER = struct.Struct("<IHHQQQ")  # magic, version, type, request_id, payload_bytes, data_bytes
IPC_HANDLE_BYTES = 64
INVALID_ID = 2**64 - 1


class FrameType:
    HELLO = 1
    HELLO_REPLY = 2
    AUTH = 3
    LINK_ACK = 4
    SHM_ABORT = 5
    AUTH_REPLY = 6
    PULL_REQUEST = 10
    PULL_REPLY = 11
    PUSH_REQUEST = 12
    PUSH_REPLY = 13
    RELEASE = 14
    PUSH_COMPLETE = 15
    UNLINK_REQUEST = 20
    UNLINK_REPLY = 21
    HEARTBEAT = 30


class ProtocolError(AssertionError):
    pass


class Reader:
    """Little-endian fields out of a payload; raises ProtocolError past its end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError(f"payload ends at {len(self.data)}, wanted {n} bytes at {self.pos}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))[0]

    def string(self) -> str:
        return self.take(self.u("I")).decode("utf-8", "replace")


def put_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def frame(ftype: int, request_id: int, payload: bytes = b"", data_bytes: int = 0,
          version: int = PROTOCOL_VERSION, payload_bytes: Optional[int] = None) -> bytes:
    """A frame header (+ payload). `payload_bytes` may lie about the payload's length."""
    n = len(payload) if payload_bytes is None else payload_bytes
    return HEADER.pack(FRAME_MAGIC, version, ftype, request_id, n, data_bytes) + payload


def _mac(secret: str, role: bytes, first: bytes, second: bytes, id_a: int, id_b: int) -> bytes:
    msg = role + first + second + struct.pack("<QQ", id_a, id_b)
    return hmac.new(secret.encode(), msg, hashlib.sha256).digest()


def pull_request(key_kind: int = 2, req_id: int = INVALID_ID, prefix_id: int = INVALID_ID, model_id: int = 0,
                 cache_id: int = -1, batch_index: int = 0, layout: int = 1, delivery: int = 1,
                 all_tensors: int = 1, tensor_begin: int = 0, tensor_count: int = 1, size: int = 0,
                 whole_slot: int = 0, chunk_bytes: int = 0, chunk_count: int = 0,
                 blocks: Sequence[int] = (), timeout_ms: int = 1000, push_bytes: int = 0) -> bytes:
    """The owner-side selection of a pull or push (TransferRequest in csrc/link/messages.h).
    key_kind: 0 CacheKey, 1 CacheKeyByIdAndIndex, 2 BlocksCacheKey; layout: 0 slot->slot,
    1 blocks->blocks, 2 slot->blocks; delivery: 0 describe (a link with a one-sided transport
    only), 1 stream; push_bytes: what a described push writes (protocol 6)."""
    return (struct.pack("<BQQQqIBBBIIQBQI", key_kind, req_id, prefix_id, model_id, cache_id, batch_index, layout,
                        delivery, all_tensors, tensor_begin, tensor_count, size, whole_slot, chunk_bytes,
                        chunk_count)
            + struct.pack("<I", len(blocks)) + b"".join(struct.pack("<Q", b) for b in blocks)
            + struct.pack("<I", timeout_ms) + struct.pack("<Q", push_bytes))


def push_complete(push_request_id: int, success: bool = True) -> bytes:
    """kPushComplete's payload (PushComplete in csrc/link/messages.h, protocol 6)."""
    return struct.pack("<QB", push_request_id, int(success))


@dataclass
class PullReply:
    status: int
    message: str
    stride: int = 0
    slot: int = 0
    # describe mode: (location, region id, offset or address) per tensor
    locations: Tuple[Tuple[int, int, int], ...] = ()
    needs_release: bool = True


def parse_status(r: Reader) -> Tuple[int, str]:
    code = r.u("I")
    message = r.string()
    for _ in range(r.u("I")):
        r.string()
        r.string()
    return code, message


def parse_pull_reply(payload: bytes) -> PullReply:
    r = Reader(payload)
    code, message = parse_status(r)
    if code != 0:
        return PullReply(code, message)
    stride, slot, n = r.u("Q"), r.u("I"), r.u("I")
    locs = tuple((r.u("B"), r.u("B"), r.u("Q")) for _ in range(n))
    return PullReply(code, message, stride, slot, locs, bool(r.u("B")))


class RawPeer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.link_ack: Optional[Tuple[int, str]] = None

    # -- connection ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, host: str, port: int, timeout: float = 5.0) -> "RawPeer":
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.settimeout(timeout)
        return cls(sock)

    @classmethod
    def link(cls, host: str, port: int, client_id: int, server_id: int, secret: Optional[str] = None,
             timeout: float = 5.0) -> "RawPeer":
        """Connects and completes the handshake as a peer on another host (no shared memory).
        Raises ProtocolError when the server refuses, with its message."""
        peer = cls.connect(host, port, timeout)
        peer.handshake(client_id, server_id, secret)
        return peer

    def handshake(self, client_id: int, server_id: int, secret: Optional[str] = None,
                  timeout_ms: int = 5000) -> None:
        """Protocol 3 (the client proves the secret first); with LLMDD_RAW_PEER_VERSION=2 in the
        environment, protocol 2 (to show an attack against a build from before it)."""
        if PROTOCOL_VERSION == 2:
            return self._handshake_v2(client_id, server_id, secret, timeout_ms)
        nonce_c = os.urandom(16)
        self.send_frame(FrameType.HELLO, 0,
                        struct.pack("<QQ", client_id, server_id) + nonce_c + struct.pack("<B", secret is not None))
        header, payload = self.recv_frame()
        if header[2] != FrameType.HELLO_REPLY:
            raise ProtocolError(f"expected a hello reply, got frame type {header[2]}")
        r = Reader(payload)
        code, message = r.u("I"), r.string()
        if code != 0:
            raise ProtocolError(f"refused at hello: {code:#x} {message}")
        r.u("Q")  # server id
        nonce_s = r.take(16)
        r.u("B")  # server has a secret
        self.hello_reply_rest = payload[r.pos:]
        mac_c = (_mac(secret, b"llmdd-client", nonce_s, nonce_c, client_id, server_id) if secret is not None
                 else bytes(32))
        # mac_c, boot id "" (another host: no shared memory), pid, no regions
        self.send_frame(FrameType.AUTH, 0, mac_c + put_string("") + struct.pack("<iI", os.getpid(), 0))
        header, payload = self.recv_frame()
        r = Reader(payload)
        code, message = r.u("I"), r.string()
        if header[2] != FrameType.AUTH_REPLY or code != 0:
            raise ProtocolError(f"refused at authentication: {code:#x} {message}")
        header, payload = self.recv_frame()
        r = Reader(payload)
        code, message = r.u("I"), r.string()
        if header[2] != FrameType.LINK_ACK or code != 0:
            raise ProtocolError(f"refused at the link acknowledgement: {code:#x} {message}")
        self.link_ack = (code, message)

    def _handshake_v2(self, client_id: int, server_id: int, secret: Optional[str], timeout_ms: int) -> None:
        nonce_c = os.urandom(16)
        hello = (struct.pack("<QQ", client_id, server_id) + nonce_c + struct.pack("<B", secret is not None)
                 + put_string("") + struct.pack("<ii", os.getpid(), timeout_ms))
        self.send_frame(FrameType.HELLO, 0, hello)
        header, payload = self.recv_frame()
        r = Reader(payload)
        code, message = r.u("I"), r.string()
        if header[2] != FrameType.HELLO_REPLY or code != 0:
            raise ProtocolError(f"refused at hello: {code:#x} {message}")
        r.u("Q")
        nonce_s = r.take(16)
        r.u("B")
        r.take(32)
        mac_c = (_mac(secret, b"llmdd-client", nonce_s, nonce_c, client_id, server_id) if secret is not None
                 else bytes(32))
        self.send_frame(FrameType.AUTH, 0, mac_c + struct.pack("<I", 0) + struct.pack("<B", 0))
        header, payload = self.recv_frame()
        r = Reader(payload)
        code, message = r.u("I"), r.string()
        if header[2] != FrameType.LINK_ACK or code != 0:
            raise ProtocolError(f"refused at authentication: {code:#x} {message}")
        self.link_ack = (code, message)

    # -- frames --------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, ftype: int, request_id: int, payload: bytes = b"", data: bytes = b"",
                   data_bytes: Optional[int] = None) -> None:
        self.sock.sendall(frame(ftype, request_id, payload, len(data) if data_bytes is None else data_bytes) + data)

    def recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(min(n - len(out), 1 << 20))
            if not chunk:
                raise ConnectionError(f"peer closed the connection after {len(out)} of {n} bytes")
            out.extend(chunk)
        return bytes(out)

    def recv_frame(self) -> Tuple[Tuple[int, ...], bytes]:
        """(header fields, payload); skips heartbeats. Data bytes after it are left unread."""
        while True:
            header = HEADER.unpack(self.recv_exact(HEADER.size))
            payload = self.recv_exact(header[4]) if header[4] else b""
            if header[2] != FrameType.HEARTBEAT:
                return header, payload

    def recv_reply(self, timeout: float = 5.0) -> Tuple[Tuple[int, ...], bytes, bytes]:
        """The next non-heartbeat frame, its payload and the data that follows it."""
        self.sock.settimeout(timeout)
        header, payload = self.recv_frame()
        data = self.recv_exact(header[5]) if header[5] else b""
        return header, payload, data

    def pull(self, request_id: int, request: bytes, timeout: float = 5.0) -> Tuple[PullReply, bytes]:
        self.send_frame(FrameType.PULL_REQUEST, request_id, request)
        deadline = time.monotonic() + timeout
        while True:
            header, payload, data = self.recv_reply(max(0.01, deadline - time.monotonic()))
            if header[2] == FrameType.PULL_REPLY and header[3] == request_id:
                return parse_pull_reply(payload), data

    def closed_by_server(self, timeout: float = 2.0) -> bool:
        """True when the server closes this connection within `timeout` (reading and dropping
        whatever arrives first)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_idle_connections(host: str, port: int, count: int) -> List[socket.socket]:
    """`count` connections that never send a byte (the caller closes them)."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect((host, port))
        socks.append(s)
    return socks
