// SPDX-License-Identifier: Apache-2.0
// The link protocol's framing and encoding, and socket I/O that is always bounded by a deadline.
//
// Every message is a 32-byte FrameHeader followed by `payload_bytes` of payload. Payloads are
// little-endian fields written by ByteWriter and read by ByteReader, which refuses to read
// past the end (a malformed frame is an error, never an out-of-bounds read).
//
// Protocol versions (kProtocolVersion): bump on any incompatible change, and say what changed.
//   1: first version (handshake, pull/push describe+stream, release, unlink, heartbeat).
//   2: the link acknowledgement ends with a byte saying whether the link's frames continue on
//      the Unix pool channel (one host) instead of the TCP connection; a pull reply ends with
//      a byte saying whether the owner waits for a kRelease (not for a streamed pull that
//      consumes no key).
//   3: the client proves the secret first: kHello carries only ids, a nonce and whether a secret
//      is set; the boot id, pid, regions and pool channel name move after authentication into
//      kAuth and the new kAuthReply; kShmAbort carries a reason; kHello has no client timeout.
//   4: a push request may name its destination by address (key kind 3, RemoteKeyKind::kAddress:
//      upstream's TransferConfig), which a version-3 owner drops as malformed.
//      Messages are structs in link/messages.h. kAuth and kAuthReply may end with transport
//      offers (TransportOffer) after the regions; they are written only when a transport
//      provider offers bytes (none of shm, cuda_ipc, CMA, tcp does), so the bytes of this
//      version are unchanged, and a version-4 peer without offers reads nothing past the regions.
//   5: a kBlocksToBlocks transfer's `size`, when not 0, is the byte count of its last chunk (a
//      push from a contiguous slot into blocks whose last block the slot fills only in part;
//      upstream's transfer_cache_async with dst_block_memory_size); a version-4 owner would
//      write a whole block there. A transfer request ends with the requester's sync_kv_timeout
//      (u32 ms), which bounds the owner's side of it (at most kMaxServeTimeoutMs).
//   6: pushes may be one-sided (a link transport that writes, Capabilities::writes: ucx): a push
//      request with delivery kDescribe carries no data; it ends, like every transfer request,
//      with push_bytes (u64: the bytes a described push will write, 0 otherwise). The owner checks
//      it as a streamed push's data_bytes and answers with the described destination (a
//      PullReply's fields); the requester writes, then sends the new kPushComplete, answered by a
//      kPushReply status. A version-5 owner would drop a request of this length as malformed.
#ifndef LLM_DATADIST_LINK_WIRE_H_
#define LLM_DATADIST_LINK_WIRE_H_

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist {

constexpr uint32_t kFrameMagic = 0x4C4C4444;  // "LLDD"
constexpr uint16_t kProtocolVersion = 6;
// A control payload larger than this is malformed (data follows frames, not inside them).
constexpr uint64_t kMaxControlPayload = 64ull << 20;
// Blocks (or chunks) one transfer request may name: the owner sizes its work by this count
// before it checks the blocks, so it is capped before anything is allocated.
constexpr uint32_t kMaxBlocksPerTransfer = 1u << 20;

enum class FrameType : uint16_t {
  kHello = 1,
  kHelloReply = 2,
  kAuth = 3,
  kLinkAck = 4,
  kShmAbort = 5,
  kAuthReply = 6,
  kPullRequest = 10,
  kPullReply = 11,
  kPushRequest = 12,
  kPushReply = 13,
  kRelease = 14,
  kPushComplete = 15,
  kUnlinkRequest = 20,
  kUnlinkReply = 21,
  kHeartbeat = 30,
};

struct FrameHeader {
  uint32_t magic = kFrameMagic;
  uint16_t version = kProtocolVersion;
  uint16_t type = 0;
  uint64_t request_id = 0;
  uint64_t payload_bytes = 0;
  // Bytes of raw data that follow the payload (streamed transfers); 0 for control frames.
  uint64_t data_bytes = 0;
};
static_assert(sizeof(FrameHeader) == 32, "FrameHeader is a wire format");

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;
inline Deadline DeadlineIn(int64_t ms) { return Clock::now() + std::chrono::milliseconds(ms); }
inline int64_t MillisLeft(Deadline d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d - Clock::now()).count();
}

class ByteWriter {
 public:
  template <typename T>
  ByteWriter &Put(T value) {
    static_assert(std::is_trivially_copyable<T>::value, "plain values only");
    const auto *p = reinterpret_cast<const uint8_t *>(&value);
    bytes_.insert(bytes_.end(), p, p + sizeof(T));
    return *this;
  }
  ByteWriter &PutString(const std::string &s) {
    Put<uint32_t>(static_cast<uint32_t>(s.size()));
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  ByteWriter &PutBytes(const void *data, size_t n) {
    const auto *p = static_cast<const uint8_t *>(data);
    bytes_.insert(bytes_.end(), p, p + n);
    return *this;
  }
  template <typename T>
  ByteWriter &PutVector(const std::vector<T> &v) {
    Put<uint32_t>(static_cast<uint32_t>(v.size()));
    if (!v.empty()) PutBytes(v.data(), v.size() * sizeof(T));
    return *this;
  }
  const std::vector<uint8_t> &bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

class ByteReader {
 public:
  ByteReader(const uint8_t *data, size_t size) : data_(data), size_(size) {}
  explicit ByteReader(const std::vector<uint8_t> &v) : ByteReader(v.data(), v.size()) {}
  template <typename T>
  bool Get(T *out) {
    if (size_ - pos_ < sizeof(T)) return fail();
    std::memcpy(out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }
  bool GetString(std::string *out, uint32_t max_len = 1 << 20) {
    uint32_t n = 0;
    if (!Get(&n) || n > max_len || size_ - pos_ < n) return fail();
    out->assign(reinterpret_cast<const char *>(data_ + pos_), n);
    pos_ += n;
    return true;
  }
  bool GetBytes(void *out, size_t n) {
    if (size_ - pos_ < n) return fail();
    std::memcpy(out, data_ + pos_, n);
    pos_ += n;
    return true;
  }
  template <typename T>
  bool GetVector(std::vector<T> *out, uint32_t max_count = 1 << 24) {
    uint32_t n = 0;
    if (!Get(&n) || n > max_count || (size_ - pos_) / sizeof(T) < n) return fail();
    out->resize(n);
    if (n) std::memcpy(out->data(), data_ + pos_, n * sizeof(T));
    pos_ += n * sizeof(T);
    return true;
  }
  bool ok() const { return ok_; }
  size_t remaining() const { return size_ - pos_; }

 private:
  bool fail() {
    ok_ = false;
    return false;
  }
  const uint8_t *data_;
  size_t size_;
  size_t pos_ = 0;
  bool ok_ = true;
};

// Socket helpers. All sockets are non-blocking; these wait with poll() until `deadline`.
// Errors: LLM_TIMEOUT when the deadline passes, LLM_LINK_FAILED for a closed or failed socket.
// `peer_closed` (optional): set to true when the failure is the peer having closed its end.
DetailedStatus SetNonBlocking(int fd);
DetailedStatus SendAll(int fd, const void *data, size_t n, Deadline deadline);
DetailedStatus RecvAll(int fd, void *data, size_t n, Deadline deadline, bool *peer_closed = nullptr);
// Sends/receives many buffers with writev/readv (in batches of IOV_MAX).
struct IoSpan {
  void *data;
  size_t bytes;
};
DetailedStatus SendSpans(int fd, const std::vector<IoSpan> &spans, Deadline deadline, bool *peer_closed = nullptr);
DetailedStatus RecvSpans(int fd, const std::vector<IoSpan> &spans, Deadline deadline, bool *peer_closed = nullptr);

DetailedStatus SendFrame(int fd, FrameType type, uint64_t request_id, const std::vector<uint8_t> &payload,
                         uint64_t data_bytes, Deadline deadline);
// Ok when `header` is ours (magic), of this protocol version, with at most max_payload bytes.
DetailedStatus CheckFrameHeader(const FrameHeader &header, uint64_t max_payload = kMaxControlPayload);
// Reads one header and its payload (at most max_payload bytes, else LLM_LINK_FAILED). The payload
// buffer grows as bytes arrive, so a header announcing a large payload costs nothing until the
// payload comes. Data bytes are left unread.
DetailedStatus RecvFrame(int fd, FrameHeader *header, std::vector<uint8_t> *payload, Deadline deadline,
                         uint64_t max_payload = kMaxControlPayload, bool *peer_closed = nullptr);

// The payload of a frame whose header was read and checked (CheckFrameHeader), grown as above.
DetailedStatus RecvPayload(int fd, const FrameHeader &header, std::vector<uint8_t> *payload, Deadline deadline,
                           bool *peer_closed = nullptr);

// Connects a TCP socket to ip:port (IPv4 or IPv6 text) within the deadline.
DetailedStatus ConnectTcp(const std::string &ip, uint16_t port, Deadline deadline, int *out_fd);
// Listens on ip:port; `bound_port` reports the actual port.
DetailedStatus ListenTcp(const std::string &ip, uint16_t port, int *out_fd, uint16_t *bound_port);

// Abstract-namespace Unix sockets (no file on disk; reachable only inside this network
// namespace), used to pass memfds with SCM_RIGHTS between processes on one host.
DetailedStatus ListenUnixAbstract(const std::string &name, int *out_fd);
DetailedStatus ConnectUnixAbstract(const std::string &name, Deadline deadline, int *out_fd);
DetailedStatus SendFds(int sock, const std::vector<int> &fds, const std::vector<uint8_t> &payload, Deadline deadline);
DetailedStatus RecvFds(int sock, std::vector<int> *fds, std::vector<uint8_t> *payload, size_t max_fds,
                       Deadline deadline);

// This host's identity: the boot (/proc/sys/kernel/random/boot_id) and the network namespace
// (/proc/self/ns/net); equal on two ends means one host. Empty when either is unknown.
std::string BootId();
// 16 random bytes from the kernel.
std::vector<uint8_t> RandomNonce();

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_WIRE_H_
