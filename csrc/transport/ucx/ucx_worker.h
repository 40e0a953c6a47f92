// SPDX-License-Identifier: Apache-2.0
// A small RAII layer over UCP (loaded at run time, see ucp_api.h) for one-sided transfers:
//
//   owner:     worker = UcxWorker::Create({.progress_thread = true})
//              worker->MapMemory(pool, bytes, kHost, &region)  -> region->packed_rkey()
//              send worker->address() and (base, size, packed rkey) to the peer
//   requester: worker->Connect(owner_address, deadline, &ep)
//              ep->UnpackRkey(packed, &rkey)
//              ep->Get({{dst, remote_address, rkey.get(), bytes}, ...}, deadline)
//   messages:  worker->SetMessageHandler(id, fn) on one side, ep->SendMessage(id, bytes, deadline)
//              on the other (small control messages over the same connection: remote keys of
//              memory registered after the link)
//
// Every operation that waits has a deadline. A batch of gets or puts is posted as one-sided
// operations, completed by an endpoint flush and progressed until the deadline; past it the
// endpoint is force-closed, which completes what is outstanding as cancelled, so that no byte
// lands in a caller's buffer after the call returned. The endpoint is unusable afterwards
// (LLM_LINK_FAILED on later calls): the link above relinks. Peer failure handling is on
// (UCP_ERR_HANDLING_MODE_PEER): a dead peer fails outstanding and later operations with
// LLM_LINK_FAILED instead of hanging.
//
// Why an owner-side progress thread: UCX transports without hardware RMA (tcp) emulate gets
// and puts with active messages that the owner's worker must progress. The thread sleeps on
// the worker's event fd and stops within milliseconds when the worker is destroyed.
//
// A UCX limitation to know (UCX 1.13 and 1.22 both): with that emulation, if a requester's
// worker disappears (the process dies) while the owner still has its get requests to answer,
// UCX aborts the owner process ("ucp_request_try_send: Fatal: unexpected error"). A requester
// that times out but lives on is harmless (its endpoint closes, the worker stays). Hardware RMA
// (verbs: rc/dc) does not involve the owner's CPU and has no such path; hence the transport
// choice above this layer prefers UCX only where it has an RDMA transport.
//
// Thread-safety: a UcxWorker and everything made from it may be used from any thread; all UCP
// calls of one worker are serialized by its mutex (the worker is created SERIALIZED). Objects
// keep their worker alive (shared ownership), so destruction order between them is free.
#ifndef LLM_DATADIST_TRANSPORT_UCX_UCX_WORKER_H_
#define LLM_DATADIST_TRANSPORT_UCX_UCX_WORKER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist::ucx {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

enum class MemoryKind : uint8_t { kHost = 0, kCuda = 1 };

// Bounds on what a peer sends us (worker addresses and packed remote keys come off the wire
// and are handed to UCX's own parsers). Generous for every transport UCX has: a worker address
// with many rails is a few KiB, a packed rkey a few hundred bytes.
constexpr size_t kMaxWorkerAddressBytes = 64 * 1024;
constexpr size_t kMaxPackedRkeyBytes = 16 * 1024;

class WorkerCore;    // ucx_worker.cc
class EndpointCore;  // ucx_worker.cc
class RemoteKey;

// One memory range registered with UCX (ucp_mem_map); unmapped on destruction.
class MemoryRegion {
 public:
  ~MemoryRegion();
  MemoryRegion(const MemoryRegion &) = delete;
  MemoryRegion &operator=(const MemoryRegion &) = delete;

  uint64_t base() const { return base_; }
  size_t size() const { return size_; }
  MemoryKind kind() const { return kind_; }
  // The remote key a peer unpacks to reach this range (ucp_rkey_pack's bytes).
  const std::string &packed_rkey() const { return packed_rkey_; }

 private:
  friend class UcxWorker;
  MemoryRegion() = default;
  std::shared_ptr<WorkerCore> core_;
  void *memh_ = nullptr;
  uint64_t base_ = 0;
  size_t size_ = 0;
  MemoryKind kind_ = MemoryKind::kHost;
  std::string packed_rkey_;
};

// One batched operation: `bytes` between local memory at `local` and the peer's memory at
// `remote_address`, inside the region `rkey` was packed from. Zero-byte operations are skipped.
struct RmaOp {
  void *local;
  uint64_t remote_address;
  const RemoteKey *rkey;
  size_t bytes;
};

// A connection to one peer worker.
class Endpoint {
 public:
  ~Endpoint();
  Endpoint(const Endpoint &) = delete;
  Endpoint &operator=(const Endpoint &) = delete;

  // Unpacks a peer's packed remote key for this endpoint (bounded by kMaxPackedRkeyBytes).
  DetailedStatus UnpackRkey(const std::string &packed, std::unique_ptr<RemoteKey> *out);

  // Reads (Get) or writes (Put) every op and returns when all are complete at the peer, or
  // fails: LLM_TIMEOUT past the deadline (the endpoint is then closed), LLM_LINK_FAILED when the
  // peer failed or the endpoint was closed before, LLM_PARAM_INVALID for an op whose rkey
  // belongs to another endpoint or that has a null pointer.
  DetailedStatus Get(const std::vector<RmaOp> &ops, Deadline deadline);
  DetailedStatus Put(const std::vector<RmaOp> &ops, Deadline deadline);

  // Sends `bytes` as one active message `id` to the peer's worker (eagerly: the peer's handler
  // gets it whole) and returns once it is delivered, bounded by the deadline (as Get/Put).
  DetailedStatus SendMessage(unsigned id, const std::vector<uint8_t> &bytes, Deadline deadline);

  // Ok while usable; else why not (the peer failed, or a transfer timed out).
  DetailedStatus health() const;

 private:
  friend class UcxWorker;
  explicit Endpoint(std::shared_ptr<EndpointCore> core) : core_(std::move(core)) {}
  std::shared_ptr<EndpointCore> core_;
};

// A peer's remote key unpacked for one endpoint; destroyed with ucp_rkey_destroy. Keeps its
// endpoint's state alive.
class RemoteKey {
 public:
  ~RemoteKey();
  RemoteKey(const RemoteKey &) = delete;
  RemoteKey &operator=(const RemoteKey &) = delete;

 private:
  friend class Endpoint;
  friend class EndpointCore;
  RemoteKey() = default;
  std::shared_ptr<EndpointCore> endpoint_;
  void *rkey_ = nullptr;
};

class UcxWorker {
 public:
  struct Options {
    // Progress the worker on a thread of its own (needed by an owner whose peers read or write
    // its memory over a transport without hardware RMA).
    bool progress_thread = false;
    // Leave UCX's tcp transport out (UCX_TLS "^tcp"), unless UCX_TLS is set in the environment.
    bool exclude_tcp = false;
  };

  // A UCP context with RMA and wakeup features and one worker. LLM_FEATURE_NOT_ENABLED (naming
  // the reason) when UCX is not available here.
  static DetailedStatus Create(const Options &options, std::shared_ptr<UcxWorker> *out);
  ~UcxWorker();
  UcxWorker(const UcxWorker &) = delete;
  UcxWorker &operator=(const UcxWorker &) = delete;

  // This worker's address, for peers to Connect() to.
  const std::string &address() const;

  // Calls `handler` with the bytes of every active message `id` a peer sends (SendMessage). It
  // runs inside the worker's progress, with the worker's lock held: it must not call into this
  // worker or anything made from it. Set once per id, before peers send.
  using MessageHandler = std::function<void(const uint8_t *data, size_t bytes)>;
  DetailedStatus SetMessageHandler(unsigned id, MessageHandler handler);

  // Registers [ptr, ptr + bytes) for local and remote read and write. kCuda registers the range
  // as CUDA memory (GPUDirect RDMA where the UCX build and the hardware have it); a UCX without
  // CUDA support fails it with LLM_FEATURE_NOT_ENABLED or LLM_FAILED naming UCX's reason.
  DetailedStatus MapMemory(void *ptr, size_t bytes, MemoryKind kind,
                           std::unique_ptr<MemoryRegion> *out);

  // An endpoint to the worker at `peer_address` (bounded by kMaxWorkerAddressBytes), with peer
  // failure handling; its wire-up is completed (by a flush) before the deadline, so an
  // unreachable peer fails here: LLM_LINK_FAILED, or LLM_TIMEOUT past the deadline.
  DetailedStatus Connect(const std::string &peer_address, Deadline deadline,
                         std::unique_ptr<Endpoint> *out);

 private:
  explicit UcxWorker(std::shared_ptr<WorkerCore> core) : core_(std::move(core)) {}
  std::shared_ptr<WorkerCore> core_;
};

}  // namespace llm_datadist::ucx

#endif  // LLM_DATADIST_TRANSPORT_UCX_UCX_WORKER_H_
