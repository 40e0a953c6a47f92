// SPDX-License-Identifier: Apache-2.0
// One link to a peer cluster: a TCP connection carrying control frames (and, on tcp links,
// streamed data), a reader thread, the calls this side is waiting on, and the peer's memory
// regions mapped into this process (shm / cuda_ipc).
//
// Threads: callers issue Call() concurrently (sends are serialized by a mutex); the reader
// thread receives every frame, completes pending calls, and hands requests from the peer to
// the LinkHandler (the engine), which replies on the same connection.
#ifndef LLM_DATADIST_LINK_LINK_H_
#define LLM_DATADIST_LINK_LINK_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/cuda_driver.h"
#include "link/wire.h"
#include "llm_datadist/status.h"

namespace llm_datadist {

class Link;

enum class TransportKind : uint8_t { kTcp = 0, kShm = 1 };
const char *TransportName(TransportKind kind);

// A memory region this process shares with linked peers (one per pool).
// kCacheTable is the owner's published blocks-cache table (cache/cache_table.h).
enum class RegionKind : uint8_t { kHostPool = 0, kCpuDevicePool = 1, kCudaPool = 2, kCacheTable = 3 };
struct LocalRegion {
  uint8_t id = 0;
  RegionKind kind = RegionKind::kHostPool;
  uint64_t size = 0;
  int memfd = -1;  // host and CPU-device pools
  bool has_ipc = false;
  cuda::CUipcMemHandle ipc_handle{};  // CUDA pool
};

// The peer's region as seen from here.
struct RemoteRegion {
  uint8_t id = 0;
  RegionKind kind = RegionKind::kHostPool;
  uint64_t size = 0;
  const uint8_t *mapped = nullptr;  // read-only mapping of the peer's memfd (shm links)
  bool has_ipc = false;
  cuda::CUipcMemHandle ipc_handle{};
  void *ipc_ptr = nullptr;  // opened lazily (cuda_ipc)
  bool ipc_failed = false;
};

// A call this side made and waits on. For streamed replies the reader thread receives the
// data straight into `recv_spans` (host-addressable memory) before completing the call.
struct PendingCall {
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  // Mirrors `done` (set after it, under the mutex) so the caller can spin briefly on it
  // without the lock before sleeping on the condition variable.
  std::atomic<bool> ready{false};
  DetailedStatus status;
  FrameHeader reply_header;
  std::vector<uint8_t> reply;
  std::vector<IoSpan> recv_spans;
  uint64_t recv_bytes = 0;
  Deadline deadline;
};

// What the owner holds while a peer reads its memory (released by kRelease or link loss).
struct ServedTransfer {
  std::shared_ptr<void> pin;
  int64_t cache_id = -1;
  uint32_t slot = 0;
  uint32_t tensor_begin = 0;
  uint32_t tensor_end = 0;
  bool consumes = false;  // a slot pull that may consume a req key
};

class LinkHandler {
 public:
  virtual ~LinkHandler() = default;
  // A request frame from the peer (pull, push, release, unlink). Runs on the reader thread;
  // must consume exactly header.data_bytes of data from the connection.
  virtual DetailedStatus OnPeerFrame(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) = 0;
};

struct LinkCounters {
  std::atomic<uint64_t> bytes_pulled{0};
  std::atomic<uint64_t> bytes_pushed{0};
  std::atomic<uint64_t> bytes_served{0};
  std::atomic<uint64_t> pulls{0};
  std::atomic<uint64_t> pushes{0};
  std::atomic<uint64_t> errors{0};
};

class Link {
 public:
  enum class State : int { kActive = 0, kBroken = 1, kClosed = 2 };

  Link(uint64_t local_cluster_id, uint64_t peer_cluster_id, int fd, LinkHandler *handler);
  ~Link();
  Link(const Link &) = delete;
  Link &operator=(const Link &) = delete;

  void Start();
  // Closes the connection; pending calls fail with LLM_LINK_FAILED naming `reason`.
  void Close(State state, const std::string &reason);
  // Marks the link unusable (e.g. a transfer timed out) and closes the connection.
  void Break(const std::string &reason) { Close(State::kBroken, reason); }

  // Sends a request (plus optional data) and waits for its reply until `deadline`. Past the
  // deadline: LLM_TIMEOUT, and the link is broken (the connection may be mid-frame).
  DetailedStatus Call(FrameType type, const std::vector<uint8_t> &payload, const std::vector<IoSpan> &data,
                      const std::shared_ptr<PendingCall> &call, Deadline deadline);
  // Sends a frame without waiting for anything (replies, releases).
  DetailedStatus Send(FrameType type, uint64_t request_id, const std::vector<uint8_t> &payload,
                      const std::vector<IoSpan> &data, uint64_t data_bytes, Deadline deadline);
  // For handlers on the reader thread: receive or skip data that follows a frame.
  DetailedStatus ReceiveData(const std::vector<IoSpan> &spans, Deadline deadline);
  DetailedStatus DrainData(uint64_t bytes, Deadline deadline);
  void SendHeartbeatIfIdle(int64_t idle_ms);
  // Best effort, never blocking on a stuck peer: tells the peer this end is going away, so it
  // tears its end down too (force unlink, finalize).
  void NotifyClosing();

  // Why calls on this link fail now (ok while active).
  DetailedStatus Usable() const;

  uint64_t local_cluster_id() const { return local_cluster_id_; }
  uint64_t peer_cluster_id() const { return peer_cluster_id_; }
  State state() const { return static_cast<State>(state_.load()); }
  std::string close_reason() const;
  int64_t millis_since_rx() const;
  // True when the peer sent nothing for more than `ms` while this end waits on no reply from it
  // and no frame of it is being read or waits unread on the connection.
  bool SilentFor(int64_t ms) const;
  // True when the peer has closed its end (its FIN arrived), even if the reader has not seen it yet.
  bool PeerHungUp() const;
  // The peer unlinked this link (its kUnlinkRequest arrived), as opposed to dying or breaking.
  bool unlinked_by_peer() const { return unlinked_by_peer_.load(); }

  // Set during the handshake, read-only afterwards.
  TransportKind transport = TransportKind::kTcp;
  std::string transport_reason;
  int peer_pid = -1;
  bool same_host = false;
  bool frames_over_unix = false;  // control frames on the Unix pool channel, not TCP (one host)
  bool accepted_by_listener = false;  // this end accepted the link (the owner's side)
  std::string remote_address;
  std::vector<RemoteRegion> remote_regions;
  std::mutex ipc_mutex;  // guards lazy cuda_ipc opening of remote_regions

  LinkCounters counters;
  // Owner side: transfers the peer is reading, by request id.
  std::mutex served_mutex;
  std::map<uint64_t, ServedTransfer> served;

  uint64_t NextRequestId() { return next_request_id_.fetch_add(1); }

 private:
  void ReaderLoop();
  // The reader's work: frames until the link ends; what ended it.
  DetailedStatus ReadFrames();
  void FailPending(const DetailedStatus &status);

  const uint64_t local_cluster_id_;
  const uint64_t peer_cluster_id_;
  const int fd_;
  LinkHandler *handler_;
  std::thread reader_;
  std::atomic<int> state_{static_cast<int>(State::kActive)};
  mutable std::mutex reason_mutex_;
  std::string close_reason_;
  std::mutex write_mutex_;
  std::atomic<int64_t> last_rx_ns_;
  std::atomic<bool> in_frame_{false};  // the reader is handling a frame (maybe a long transfer)
  std::atomic<bool> unlinked_by_peer_{false};  // the peer's kUnlinkRequest arrived
  std::atomic<int64_t> last_tx_ns_;
  std::atomic<uint64_t> next_request_id_{1};
  mutable std::mutex pending_mutex_;
  std::map<uint64_t, std::shared_ptr<PendingCall>> pending_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_LINK_H_
