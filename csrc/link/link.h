// SPDX-License-Identifier: Apache-2.0
// One link to a peer cluster: a connection carrying control frames (and, when no one-sided
// transport reaches a tensor, streamed data), a reader thread, the calls this side is waiting
// on, and what the handshake settled (LinkSetup): who the peer is, its regions, and the
// transports (transport/transport.h) that reach its memory.
//
// Threads: callers issue Call() concurrently (sends are serialized by a mutex). Frames are read
// by whoever holds the read side (read_mutex_), one whole frame at a time: a caller waiting on
// its reply takes it when it is free and reads the connection itself (the kernel wakes it when
// the reply lands: no hand-off from another thread); otherwise the reader thread does. Whoever
// reads a frame acts on it: it completes the pending call a reply is for, and hands requests
// from the peer to the LinkHandler (the engine), which replies on the same connection.
//
// Small transfers are decided by wake-ups, not by copies (docs/transfer.md, "Small pulls"):
//  - Waits spin before they sleep (LinkSetup::poll_spin_us): a caller polls for its reply, and
//    the reader polls for the next frame after one, without blocking, yielding the CPU between
//    polls. A request that comes while its owner's reader spins, or a reply while its caller
//    spins, costs no wake-up of a sleeping thread (on a VM, of a halted vCPU too).
//  - While this side's callers read the connection themselves, the reader thread parks off it
//    (otherwise every reply wakes it too, for a frame a caller then takes): it parks while a
//    caller reads, and for kReaderParkMs after the last caller read while no call waits on
//    someone else to read its reply. A caller that leaves with another call pending or bytes
//    unread wakes it; peer frames that come in a gap between calls are read by the next caller,
//    or by the reader within kReaderParkMs.
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

#include <optional>

#include "common/metrics.h"
#include "link/wire.h"
#include "llm_datadist/status.h"
#include "transport/transport.h"

namespace llm_datadist {

class Link;

// A call this side made and waits on. For streamed replies the thread that reads the reply
// (the caller itself, or the reader thread) receives the data straight into `recv_spans`
// (host-addressable memory) before completing the call.
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

// What the owner holds while a peer reads (or writes) its memory: released by kRelease, by
// kPushComplete, by link loss, or past `expires` (DropExpiredServed).
struct ServedTransfer {
  std::shared_ptr<void> pin;
  int64_t cache_id = -1;
  uint32_t slot = 0;
  uint32_t tensor_begin = 0;
  uint32_t tensor_end = 0;
  bool consumes = false;  // a slot pull that may consume a req key
  bool push = false;      // a described push (the peer writes the destination)
  uint64_t bytes = 0;     // a described push: the destination's bytes
  uint64_t started = 0;   // a described push: when its request came (the serve_push latency)
  Deadline expires = Deadline::max();
};

// llmdd.PollSpinUs: how long a wait on a link's connection polls before it sleeps. 50 us covers
// a request following the previous reply and a small reply on one host or a fast network.
constexpr int64_t kDefaultPollSpinUs = 50;
constexpr int64_t kMaxPollSpinUs = 1000;
// How long the reader stays parked after this side's callers last read the connection.
constexpr int64_t kReaderParkMs = 1;

// What the handshake settled about a link; fixed for the link's life.
struct LinkSetup {
  uint64_t local_cluster_id = 0;
  uint64_t peer_cluster_id = 0;
  // What link_info reports: the first transport (in registry order) that serves the link.
  TransportKind transport = TransportKind::kTcp;
  std::string transport_reason;
  // Every transport that serves the link, in preference order. Empty: owner-streamed only.
  std::vector<std::unique_ptr<Transport>> transports;
  int peer_pid = -1;
  bool same_host = false;
  bool frames_over_unix = false;      // control frames on the Unix pool channel, not TCP (one host)
  bool accepted_by_listener = false;  // this end accepted the link (the owner's side)
  // How long a wait on the connection polls before it sleeps (see above); 0: it sleeps at once.
  int64_t poll_spin_us = kDefaultPollSpinUs;
  std::string remote_address;
  // The peer's regions; the link unmaps the mapped ones when it goes.
  std::vector<RemoteRegion> remote_regions;
};

class LinkHandler {
 public:
  virtual ~LinkHandler() = default;
  // A request frame from the peer (pull, push, release, unlink). Runs on the thread that holds
  // the link's read side (the reader thread, or a caller of Link::Call waiting on its reply);
  // must consume exactly header.data_bytes of data from the connection.
  virtual DetailedStatus OnPeerFrame(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) = 0;
  // The link is installed and its reader runs (called once, on the handshake's thread): the
  // handler tells its transports about memory they may need announced (registered caches).
  virtual void OnLinkUp(Link &link) {}
  // A started link left the active state (once per link): broken (a failure) or closed (unlinked,
  // finalized). Runs on whichever thread closed it, possibly the link's destructor: counting
  // only, nothing that blocks.
  virtual void OnLinkDown(Link &link, bool broken) {}
};

// What the link's data path did that its per-operation metrics do not say (link_info shows both).
struct LinkCounters {
  // Of the bytes pushed: written one-sided by a transport (Transport::Write), not sent on the link.
  std::atomic<uint64_t> bytes_pushed_one_sided{0};
  // Data bytes (after frames) this end sent on the link's connection: streamed pushes and
  // streamed pull replies. What one-sided transfers keep small.
  std::atomic<uint64_t> data_bytes_sent{0};
};

class Link {
 public:
  enum class State : int { kActive = 0, kBroken = 1, kClosed = 2 };

  // `fd` is the connection the link's frames travel on; the link owns it.
  Link(LinkSetup setup, int fd, LinkHandler *handler);
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
  // For handlers (on the thread holding the read side): receive or skip data that follows a frame.
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

  // ---- what the handshake settled ----
  TransportKind transport() const { return setup_.transport; }
  const std::string &transport_reason() const { return setup_.transport_reason; }
  int peer_pid() const { return setup_.peer_pid; }
  bool same_host() const { return setup_.same_host; }
  bool frames_over_unix() const { return setup_.frames_over_unix; }
  bool accepted_by_listener() const { return setup_.accepted_by_listener; }
  const std::string &remote_address() const { return setup_.remote_address; }
  // The peer's pool region `id` (not its cache table) as announced, or nullptr.
  const RemoteRegion *RemotePool(uint8_t id) const;

  // ---- transports ----
  // Some transport reads the peer's memory one-sided (else every transfer is owner-streamed).
  bool HasOneSided() const;
  // The first one-sided transport that reaches `where` into local memory of `local_kind`, or
  // nullptr (then the owner streams it).
  Transport *TransportFor(const RemoteMemory &where, MemoryKind local_kind) const;
  // Some transport writes the peer's memory one-sided (pushes may be described).
  bool HasWriter() const;
  // The first transport that writes `where` from local memory of `local_kind`, or nullptr.
  Transport *WriterFor(const RemoteMemory &where, MemoryKind local_kind) const;
  // Whether to ask the peer to describe pushes: until it refused one for the link as a whole (its
  // end has no one-sided transport, e.g. this end offered it no UCX), which holds for the link's life.
  bool PeerDescribesPushes() const { return !peer_refused_described_push_.load(); }
  void PeerRefusedDescribedPush() { peer_refused_described_push_.store(true); }
  // The owner's published entry for `key`, where a transport reads its table.
  std::optional<TableEntry> LookupPublished(const TableKey &key) const;
  // For link_info: the peer offers its CUDA pool over IPC on this host / this side opened it.
  bool PeerOffersCudaIpc() const;
  bool CudaIpcOpened() const;
  // A local cache was registered / is going away after the link was made.
  void OnCacheRegistered(const RegisteredMemory &memory, Deadline deadline);
  void OnCacheUnregistered(int64_t cache_id);

  // What moved over this link and how long it took (the engine records, common/metrics.h).
  Metrics metrics;
  LinkCounters counters;

  // ---- owner side: transfers the peer is reading, by request id ----
  void AddServed(uint64_t request_id, ServedTransfer served);
  // Removes and returns it (nullopt: none by that id).
  std::optional<ServedTransfer> TakeServed(uint64_t request_id);
  size_t served_count() const;
  // Drops what is held past its `expires` (a requester that described a push and went silent
  // without the link going); returns how many.
  size_t DropExpiredServed(Deadline now);

  uint64_t NextRequestId() { return next_request_id_.fetch_add(1); }

 private:
  void ReaderLoop();
  // The reader's work: frames until the link ends; what ended it.
  DetailedStatus ReadFrames();
  // Reads one whole frame (with its data) and acts on it; the caller holds read_mutex_. The
  // header must start arriving by `deadline`. Not ok: the connection cannot be read any more.
  // *ended: the link ended in good order (the peer unlinked).
  DetailedStatus ReadOneFrame(Deadline deadline, bool *ended);
  // ReadOneFrame, with any exception (nothing a peer sends may end the process) as a status.
  DetailedStatus ReadOneFrameGuarded(Deadline deadline, bool *ended);
  // Completes a call with its reply (when `status` is ok) or the failure.
  static void CompleteCall(PendingCall &call, const FrameHeader &header, std::vector<uint8_t> reply,
                           const DetailedStatus &status);
  // Closes the link after reading failed with `failure` (a no-op when it is closed already).
  void EndReading(const DetailedStatus &failure);
  // Call's wait: reads the connection itself while no one else does, until `call` completes or
  // the deadline passes; returns early (the call still pending) when another thread still has
  // the read side after poll_spin_us, and that thread then completes the call. False: the
  // deadline passed inside a frame.
  bool ReadUntilDone(PendingCall &call, Deadline deadline);
  // The reader thread stays off the connection now (see the top of this file)?
  bool ReaderShouldPark();
  // Called by a caller leaving the read side: wakes a parked reader when someone needs it.
  void WakeReaderIfNeeded();
  // One poll of the connection for input, spinning (without blocking, yielding between polls)
  // until `spin_until_ns` and then blocking for up to `block_ms`. poll(2)'s result.
  int PollInput(int64_t spin_until_ns, int block_ms);
  void FailPending(const DetailedStatus &status);

  const LinkSetup setup_;
  const uint64_t local_cluster_id_;
  const uint64_t peer_cluster_id_;
  const int fd_;
  LinkHandler *handler_;
  std::thread reader_;
  std::atomic<int> state_{static_cast<int>(State::kActive)};
  std::atomic<bool> started_{false};  // Start() ran: the handler heard of the link
  std::atomic<bool> unlinking_{false};  // this end sent kUnlinkRequest
  mutable std::mutex reason_mutex_;
  std::string close_reason_;
  std::mutex write_mutex_;
  // Held by the one thread reading frames from fd_ (the reader, or a caller awaiting its reply),
  // for a whole frame at a time: the stream is at a frame boundary whenever it is free.
  std::mutex read_mutex_;
  // Frames callers read (ReadUntilDone); the reader thread, woken by bytes a caller then read,
  // sees it change and looks again before it reads.
  std::atomic<uint64_t> caller_frames_{0};
  // Callers holding the read side now, and when one last read a frame (steady-clock ns).
  std::atomic<int> callers_reading_{0};
  std::atomic<int64_t> last_caller_read_ns_{0};
  std::mutex park_mutex_;
  std::condition_variable park_cv_;
  bool reader_wanted_ = false;  // under park_mutex_
  std::atomic<int64_t> last_rx_ns_;
  std::atomic<bool> in_frame_{false};  // the reader is handling a frame (maybe a long transfer)
  std::atomic<bool> unlinked_by_peer_{false};  // the peer's kUnlinkRequest arrived
  std::atomic<bool> peer_closed_{false};  // a read or write on fd_ found the peer's end closed
  std::atomic<bool> peer_refused_described_push_{false};
  std::atomic<int64_t> last_tx_ns_;
  std::atomic<uint64_t> next_request_id_{1};
  mutable std::mutex pending_mutex_;
  std::map<uint64_t, std::shared_ptr<PendingCall>> pending_;
  mutable std::mutex served_mutex_;
  std::map<uint64_t, ServedTransfer> served_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_LINK_H_
