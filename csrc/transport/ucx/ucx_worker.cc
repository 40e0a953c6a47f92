// SPDX-License-Identifier: Apache-2.0
#include "transport/ucx/ucx_worker.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "common/logging.h"
#include "transport/ucx/ucp_api.h"

namespace llm_datadist::ucx {

namespace {

// How long a waiter keeps calling ucp_worker_progress before it sleeps on the event fd: a
// transfer that completes within this stays off the sleep/wake path (microseconds matter for
// small pulls); longer waits do not burn a core.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);
// Longest single sleep on the event fd: bounds how late a waiter notices a completion that a
// concurrent thread (the progress thread) consumed the wake-up of, and the deadline.
constexpr int kMaxSleepMs = 1;
// After a force close, how long outstanding requests may take to be completed as cancelled.
constexpr auto kCancelGrace = std::chrono::seconds(2);
// How long the owner's progress thread sleeps when nothing wakes it: a safety net only (the
// event fd and the stop fd wake it).
constexpr int kProgressThreadSleepMs = 100;

int MillisUntil(Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

}  // namespace

// ---- WorkerCore: the context, the worker, its lock and its progress thread ----

class WorkerCore {
 public:
  const UcpApi *api = nullptr;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  std::string address;
  int event_fd = -1;  // the worker's (owned by UCX)
  std::mutex mu;      // serializes every UCP call on this worker
  std::map<unsigned, UcxWorker::MessageHandler> handlers;  // by active message id; under mu

  static ucs_status_t OnMessage(void *arg, const void *, size_t, void *data, size_t length,
                                const UcpAmRecvParam *param) {
    auto *entry = static_cast<std::pair<WorkerCore *, unsigned> *>(arg);
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0) {
      // Our messages are sent eagerly; a rendezvous one is not ours to fetch: dropped.
      LLMDD_LOG(kWarning, "UCX: dropped a rendezvous active message ", entry->second);
      return UCS_OK;
    }
    auto it = entry->first->handlers.find(entry->second);
    if (it != entry->first->handlers.end()) it->second(static_cast<const uint8_t *>(data), length);
    return UCS_OK;  // the data is not kept past the callback
  }
  std::vector<std::unique_ptr<std::pair<WorkerCore *, unsigned>>> handler_args;

  ~WorkerCore() {
    StopProgressThread();
    if (worker != nullptr) api->ucp_worker_destroy(worker);
    if (context != nullptr) api->ucp_cleanup(context);
  }

  // Calls ucp_worker_progress (lock held) until done() or the deadline; sleeps on the event fd
  // (lock released) after kSpinBeforeSleep. Returns done().
  template <typename Done>
  bool ProgressUntil(std::unique_lock<std::mutex> &lock, Done done, Deadline deadline) {
    const Deadline spin_until = Clock::now() + kSpinBeforeSleep;
    for (;;) {
      while (api->ucp_worker_progress(worker) != 0) {
      }
      if (done()) return true;
      const Deadline now = Clock::now();
      if (now >= deadline) return false;
      if (now < spin_until) continue;
      const ucs_status_t armed = api->ucp_worker_arm(worker);
      if (armed == UCS_ERR_BUSY) continue;  // events are pending: progress again
      lock.unlock();
      if (armed == UCS_OK) {
        pollfd pfd{event_fd, POLLIN, 0};
        (void)::poll(&pfd, 1, std::min(kMaxSleepMs, MillisUntil(deadline)));
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      lock.lock();
    }
  }

  DetailedStatus StartProgressThread() {
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    LLMDD_CHECK(stop_fd_ >= 0, LLM_FAILED, "eventfd failed: errno ", errno);
    thread_ = std::thread([this] { ProgressLoop(); });
    return DetailedStatus::Ok();
  }

 private:
  void ProgressLoop() {
    while (!stop_.load(std::memory_order_acquire)) {
      ucs_status_t armed;
      {
        std::lock_guard<std::mutex> lock(mu);
        while (api->ucp_worker_progress(worker) != 0) {
        }
        armed = api->ucp_worker_arm(worker);
      }
      if (armed == UCS_ERR_BUSY) continue;
      pollfd pfds[2] = {{event_fd, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      // An arm failure leaves only the timeout to wake us: progress at that pace rather than
      // not at all.
      (void)::poll(pfds, 2, armed == UCS_OK ? kProgressThreadSleepMs : 1);
    }
  }

  void StopProgressThread() {
    if (thread_.joinable()) {
      stop_.store(true, std::memory_order_release);
      const uint64_t one = 1;
      (void)!::write(stop_fd_, &one, sizeof(one));
      thread_.join();  // wakes within a poll: the stop fd is in its set
    }
    if (stop_fd_ >= 0) ::close(stop_fd_);
    stop_fd_ = -1;
  }

  std::thread thread_;
  std::atomic<bool> stop_{false};
  int stop_fd_ = -1;
};

// ---- EndpointCore ----

class EndpointCore {
 public:
  EndpointCore(std::shared_ptr<WorkerCore> worker) : worker_(std::move(worker)) {}

  ~EndpointCore() {
    std::unique_lock<std::mutex> lock(worker_->mu);
    CloseLocked(lock);
  }

  static void OnPeerError(void *arg, ucp_ep_h, ucs_status_t status) {
    // Runs inside ucp_worker_progress, i.e. with the worker's lock held.
    auto *self = static_cast<EndpointCore *>(arg);
    if (self->failure_.ok()) {
      self->failure_ = DetailedStatus(LLM_LINK_FAILED, "peer failure: " + DescribeUcs(status));
    }
  }

  DetailedStatus Create(const std::string &peer_address, Deadline deadline) {
    std::unique_lock<std::mutex> lock(worker_->mu);
    UcpEpParams params{};
    params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                        UCP_EP_PARAM_FIELD_ERR_HANDLER;
    params.address = reinterpret_cast<const ucp_address_t *>(peer_address.data());
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &EndpointCore::OnPeerError;
    params.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    LLMDD_RETURN_IF_ERROR(CheckUcs(worker_->api->ucp_ep_create(worker_->worker, &params, &ep),
                                   "ucp_ep_create"));
    ep_ = ep;
    // The endpoint wires up lazily; a flush completes the wire-up, so a peer that cannot be
    // reached fails now rather than in the first transfer.
    std::vector<void *> none;
    return CompleteLocked(lock, &none, deadline, "connecting to the peer worker", 0);
  }

  DetailedStatus UnpackRkey(const std::string &packed, void **out) {
    LLMDD_CHECK(!packed.empty() && packed.size() <= kMaxPackedRkeyBytes, LLM_PARAM_INVALID,
                "packed remote key of ", packed.size(), " bytes (expected 1..",
                kMaxPackedRkeyBytes, ")");
    std::lock_guard<std::mutex> lock(worker_->mu);
    LLMDD_RETURN_IF_ERROR(UsableLocked());
    ucp_rkey_h rkey = nullptr;
    LLMDD_RETURN_IF_ERROR(
        CheckUcs(worker_->api->ucp_ep_rkey_unpack(ep_, packed.data(), &rkey), "ucp_ep_rkey_unpack"));
    rkeys_.insert(rkey);
    *out = rkey;
    return DetailedStatus::Ok();
  }

  // Destroys `rkey` unless closing the endpoint already did.
  void DestroyRkey(void *rkey) {
    std::lock_guard<std::mutex> lock(worker_->mu);
    if (rkeys_.erase(rkey) != 0) worker_->api->ucp_rkey_destroy(static_cast<ucp_rkey_h>(rkey));
  }

  DetailedStatus Rma(bool get, const std::vector<RmaOp> &ops, Deadline deadline) {
    const char *call = get ? "ucp_get_nbx" : "ucp_put_nbx";
    uint64_t total = 0;
    for (size_t i = 0; i < ops.size(); ++i) {
      const RmaOp &op = ops[i];
      if (op.bytes == 0) continue;
      LLMDD_CHECK(op.local != nullptr, LLM_PARAM_INVALID, "UCX op ", i, ": null local pointer");
      LLMDD_CHECK(op.rkey != nullptr && op.rkey->endpoint_.get() == this, LLM_PARAM_INVALID,
                  "UCX op ", i, ": remote key missing or unpacked for another endpoint");
      total += op.bytes;
    }
    std::unique_lock<std::mutex> lock(worker_->mu);
    LLMDD_RETURN_IF_ERROR(UsableLocked());
    const UcpApi *api = worker_->api;
    UcpRequestParam param{};  // no callback: requests are polled
    std::vector<void *> requests;
    DetailedStatus post_error;
    for (const RmaOp &op : ops) {
      if (op.bytes == 0) continue;
      auto rkey = static_cast<ucp_rkey_h>(op.rkey->rkey_);
      ucs_status_ptr_t p = get ? api->ucp_get_nbx(ep_, op.local, op.bytes, op.remote_address,
                                                  rkey, &param)
                               : api->ucp_put_nbx(ep_, op.local, op.bytes, op.remote_address,
                                                  rkey, &param);
      if (UcsPtrIsErr(p)) {
        post_error = CheckUcs(UcsPtrStatus(p), call);
        break;
      }
      if (p != nullptr) requests.push_back(p);
    }
    DetailedStatus done = CompleteLocked(
        lock, &requests, deadline,
        get ? "UCX get batch" : "UCX put batch", total);
    if (!post_error.ok()) return post_error.With("ucx_ops", ops.size());
    return done;
  }

  DetailedStatus SendMessage(unsigned id, const std::vector<uint8_t> &bytes, Deadline deadline) {
    std::unique_lock<std::mutex> lock(worker_->mu);
    LLMDD_RETURN_IF_ERROR(UsableLocked());
    UcpRequestParam param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_AM_SEND_FLAG_EAGER;
    std::vector<void *> requests;
    ucs_status_ptr_t p =
        worker_->api->ucp_am_send_nbx(ep_, id, nullptr, 0, bytes.data(), bytes.size(), &param);
    if (UcsPtrIsErr(p)) return CheckUcs(UcsPtrStatus(p), "ucp_am_send_nbx");
    if (p != nullptr) requests.push_back(p);
    return CompleteLocked(lock, &requests, deadline, "UCX message", bytes.size());
  }

  DetailedStatus health() const {
    std::lock_guard<std::mutex> lock(worker_->mu);
    return UsableLocked();
  }

 private:
  friend class Endpoint;

  DetailedStatus UsableLocked() const {
    if (ep_ == nullptr && failure_.ok()) {
      return DetailedStatus(LLM_LINK_FAILED, "UCX endpoint is closed");
    }
    if (!failure_.ok()) {
      return DetailedStatus(LLM_LINK_FAILED,
                            "UCX endpoint unusable: " + failure_.message() + "; relink");
    }
    return DetailedStatus::Ok();
  }

  // Flushes the endpoint behind `requests` (already posted), progresses until the flush and
  // every request completed or the deadline, frees every request and returns the first error.
  // Past the deadline the endpoint is force-closed (see the header) and LLM_TIMEOUT returned.
  DetailedStatus CompleteLocked(std::unique_lock<std::mutex> &lock, std::vector<void *> *requests,
                                Deadline deadline, const char *what, uint64_t bytes) {
    const UcpApi *api = worker_->api;
    const Deadline started = Clock::now();
    DetailedStatus result;
    if (ep_ != nullptr && failure_.ok()) {
      UcpRequestParam param{};
      ucs_status_ptr_t flush = api->ucp_ep_flush_nbx(ep_, &param);
      if (UcsPtrIsErr(flush)) {
        result = CheckUcs(UcsPtrStatus(flush), "ucp_ep_flush_nbx");
      } else if (flush != nullptr) {
        requests->push_back(flush);
      }
    }
    size_t first_pending = 0;
    auto all_done = [&] {
      while (first_pending < requests->size() &&
             api->ucp_request_check_status((*requests)[first_pending]) != UCS_INPROGRESS) {
        ++first_pending;
      }
      return first_pending == requests->size() || !failure_.ok();
    };
    bool done = worker_->ProgressUntil(lock, all_done, deadline);
    if (!done) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
      result = DetailedStatus(LLM_TIMEOUT,
                              detail::Concat(what, " of ", bytes, " bytes not complete after ",
                                             waited, " ms (deadline); UCX endpoint closed"));
      result.With("ucx_pending_requests", requests->size() - first_pending);
      failure_ = DetailedStatus(LLM_TIMEOUT, detail::Concat(what, " timed out"));
    }
    if (!failure_.ok()) {
      // Outstanding operations must not touch the caller's memory after we return: a force
      // close completes them as cancelled.
      CloseLocked(lock);
    }
    for (void *request : *requests) {
      const ucs_status_t s = api->ucp_request_check_status(request);
      if (s != UCS_OK && s != UCS_INPROGRESS && result.ok()) {
        result = CheckUcs(s, what);
        if (!failure_.ok()) result = DetailedStatus(LLM_LINK_FAILED, failure_.message());
      }
      api->ucp_request_free(request);  // releases on completion if still in flight
    }
    requests->clear();
    if (result.ok() && !failure_.ok()) result = DetailedStatus(LLM_LINK_FAILED, failure_.message());
    return result;
  }

  // Force-closes the endpoint (if open) and waits, bounded, until UCX completed the close and
  // every request on the endpoint.
  void CloseLocked(std::unique_lock<std::mutex> &lock) {
    if (ep_ == nullptr) return;
    const UcpApi *api = worker_->api;
    UcpRequestParam param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t close = api->ucp_ep_close_nbx(ep_, &param);
    ep_ = nullptr;
    // UCX wants remote keys destroyed after their operations are flushed and before their
    // endpoint is: a force close completes (purges) the outstanding operations in the call, and
    // the endpoint is released only when the close request completes below.
    for (void *rkey : rkeys_) api->ucp_rkey_destroy(static_cast<ucp_rkey_h>(rkey));
    rkeys_.clear();
    if (UcsPtrIsPtr(close)) {
      const bool closed = worker_->ProgressUntil(
          lock, [&] { return api->ucp_request_check_status(close) != UCS_INPROGRESS; },
          Clock::now() + kCancelGrace);
      if (!closed) LLMDD_LOG(kWarning, "UCX endpoint close did not complete within 2 s");
      api->ucp_request_free(close);
    }
    if (failure_.ok()) failure_ = DetailedStatus(LLM_LINK_FAILED, "UCX endpoint closed");
  }

  std::shared_ptr<WorkerCore> worker_;
  ucp_ep_h ep_ = nullptr;
  DetailedStatus failure_;            // guarded by worker_->mu
  std::unordered_set<void *> rkeys_;  // live remote keys unpacked here; guarded by worker_->mu
};

// ---- MemoryRegion / RemoteKey / Endpoint ----

MemoryRegion::~MemoryRegion() {
  if (memh_ == nullptr) return;
  std::lock_guard<std::mutex> lock(core_->mu);
  const ucs_status_t s = core_->api->ucp_mem_unmap(core_->context, static_cast<ucp_mem_h>(memh_));
  if (s != UCS_OK) LLMDD_LOG(kWarning, "ucp_mem_unmap failed: ", DescribeUcs(s));
}

RemoteKey::~RemoteKey() {
  if (rkey_ != nullptr) endpoint_->DestroyRkey(rkey_);
}

Endpoint::~Endpoint() = default;

DetailedStatus Endpoint::UnpackRkey(const std::string &packed, std::unique_ptr<RemoteKey> *out) {
  void *rkey = nullptr;
  LLMDD_RETURN_IF_ERROR(core_->UnpackRkey(packed, &rkey));
  std::unique_ptr<RemoteKey> key(new RemoteKey());
  key->endpoint_ = core_;
  key->rkey_ = rkey;
  *out = std::move(key);
  return DetailedStatus::Ok();
}

DetailedStatus Endpoint::Get(const std::vector<RmaOp> &ops, Deadline deadline) {
  return core_->Rma(true, ops, deadline);
}

DetailedStatus Endpoint::Put(const std::vector<RmaOp> &ops, Deadline deadline) {
  return core_->Rma(false, ops, deadline);
}

DetailedStatus Endpoint::SendMessage(unsigned id, const std::vector<uint8_t> &bytes, Deadline deadline) {
  return core_->SendMessage(id, bytes, deadline);
}

DetailedStatus Endpoint::health() const { return core_->health(); }

// ---- UcxWorker ----

DetailedStatus UcxWorker::Create(const Options &options, std::shared_ptr<UcxWorker> *out) {
  std::string why_not;
  const UcpApi *api = Api(&why_not);
  LLMDD_CHECK(api != nullptr, LLM_FEATURE_NOT_ENABLED, "UCX is not available: ", why_not);
  auto core = std::make_shared<WorkerCore>();
  core->api = api;

  ucp_config_t *config = nullptr;
  LLMDD_RETURN_IF_ERROR(CheckUcs(api->ucp_config_read(nullptr, nullptr, &config), "ucp_config_read"));
  const char *user_tls = std::getenv("UCX_TLS");
  if (options.exclude_tcp && (user_tls == nullptr || *user_tls == '\0')) {
    const ucs_status_t modified = api->ucp_config_modify(config, "TLS", "^tcp");
    if (modified != UCS_OK) {
      api->ucp_config_release(config);
      return CheckUcs(modified, "ucp_config_modify(TLS=^tcp)");
    }
  }
  UcpParams params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP | UCP_FEATURE_AM;
  const ucs_status_t init =
      api->ucp_init_version(kUcpApiMajor, kUcpApiMinor, &params, config, &core->context);
  api->ucp_config_release(config);
  LLMDD_RETURN_IF_ERROR(CheckUcs(init, "ucp_init"));

  UcpWorkerParams wparams{};
  wparams.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS;
  wparams.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  wparams.events = UCP_WAKEUP_RMA | UCP_WAKEUP_TX | UCP_WAKEUP_RX;
  LLMDD_RETURN_IF_ERROR(
      CheckUcs(api->ucp_worker_create(core->context, &wparams, &core->worker), "ucp_worker_create"));
  LLMDD_RETURN_IF_ERROR(
      CheckUcs(api->ucp_worker_get_efd(core->worker, &core->event_fd), "ucp_worker_get_efd"));

  ucp_address_t *address = nullptr;
  size_t address_bytes = 0;
  LLMDD_RETURN_IF_ERROR(CheckUcs(
      api->ucp_worker_get_address(core->worker, &address, &address_bytes), "ucp_worker_get_address"));
  core->address.assign(reinterpret_cast<const char *>(address), address_bytes);
  api->ucp_worker_release_address(core->worker, address);

  if (options.progress_thread) LLMDD_RETURN_IF_ERROR(core->StartProgressThread());
  out->reset(new UcxWorker(std::move(core)));
  return DetailedStatus::Ok();
}

UcxWorker::~UcxWorker() = default;

const std::string &UcxWorker::address() const { return core_->address; }

DetailedStatus UcxWorker::SetMessageHandler(unsigned id, MessageHandler handler) {
  std::lock_guard<std::mutex> lock(core_->mu);
  core_->handlers[id] = std::move(handler);
  core_->handler_args.push_back(std::make_unique<std::pair<WorkerCore *, unsigned>>(core_.get(), id));
  UcpAmHandlerParam param{};
  param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                     UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  param.id = id;
  param.flags = UCP_AM_FLAG_WHOLE_MSG;
  param.cb = &WorkerCore::OnMessage;
  param.arg = core_->handler_args.back().get();
  return CheckUcs(core_->api->ucp_worker_set_am_recv_handler(core_->worker, &param),
                  "ucp_worker_set_am_recv_handler");
}

DetailedStatus UcxWorker::MapMemory(void *ptr, size_t bytes, MemoryKind kind,
                                    std::unique_ptr<MemoryRegion> *out) {
  LLMDD_CHECK(ptr != nullptr && bytes > 0, LLM_PARAM_INVALID, "UCX MapMemory of ", bytes,
              " bytes at ", ptr, " (need a non-null pointer and a non-zero size)");
  const UcpApi *api = core_->api;
  UcpMemMapParams params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_PROT | UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE;
  params.address = ptr;
  params.length = bytes;
  params.prot = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_LOCAL_WRITE |
                UCP_MEM_MAP_PROT_REMOTE_READ | UCP_MEM_MAP_PROT_REMOTE_WRITE;
  params.memory_type = kind == MemoryKind::kCuda ? UCS_MEMORY_TYPE_CUDA : UCS_MEMORY_TYPE_HOST;

  std::unique_ptr<MemoryRegion> region(new MemoryRegion());
  region->core_ = core_;
  region->base_ = reinterpret_cast<uint64_t>(ptr);
  region->size_ = bytes;
  region->kind_ = kind;
  std::lock_guard<std::mutex> lock(core_->mu);
  ucp_mem_h memh = nullptr;
  DetailedStatus mapped = CheckUcs(api->ucp_mem_map(core_->context, &params, &memh), "ucp_mem_map");
  if (!mapped.ok()) {
    return mapped.With("bytes", bytes).With("memory", kind == MemoryKind::kCuda ? "cuda" : "host");
  }
  region->memh_ = memh;  // unmapped by ~MemoryRegion from here on (after this lock is released)
  void *packed = nullptr;
  size_t packed_bytes = 0;
  const ucs_status_t s = api->ucp_rkey_pack(core_->context, memh, &packed, &packed_bytes);
  if (s != UCS_OK) {
    api->ucp_mem_unmap(core_->context, memh);
    region->memh_ = nullptr;
    return CheckUcs(s, "ucp_rkey_pack");
  }
  region->packed_rkey_.assign(static_cast<const char *>(packed), packed_bytes);
  api->ucp_rkey_buffer_release(packed);
  *out = std::move(region);
  return DetailedStatus::Ok();
}

DetailedStatus UcxWorker::Connect(const std::string &peer_address, Deadline deadline,
                                  std::unique_ptr<Endpoint> *out) {
  LLMDD_CHECK(!peer_address.empty() && peer_address.size() <= kMaxWorkerAddressBytes,
              LLM_PARAM_INVALID, "UCX worker address of ", peer_address.size(),
              " bytes (expected 1..", kMaxWorkerAddressBytes, ")");
  auto core = std::make_shared<EndpointCore>(core_);
  LLMDD_RETURN_IF_ERROR(core->Create(peer_address, deadline));
  out->reset(new Endpoint(std::move(core)));
  return DetailedStatus::Ok();
}

}  // namespace llm_datadist::ucx
