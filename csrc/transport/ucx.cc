// SPDX-License-Identifier: Apache-2.0
// ucx: the peer's pools read (and written) one-sided through UCX, the engine NIXL, MPI and
// RAPIDS use: RDMA verbs (InfiniBand, RoCE) with GPUDirect where the UCX build and the hardware
// have them, tcp otherwise. For links between hosts; on one host shm / cuda_ipc are cheaper and
// more robust (see DESIGN.md §3).
//
// The owner maps each pool once (ucp_mem_map; a CUDA pool as CUDA memory) and offers its worker
// address and, per pool, (base, size, packed remote key) in the handshake (ucx/ucx_offer.h). The
// requester connects an endpoint (peer failure handling on) and unpacks the keys when the link
// is built; a read is one batch of gets, straight into the destination, and a write (a push) one
// batch of puts flushed to the owner's memory, each bounded by the call's deadline
// (ucx/ucx_worker.h). The owner still decides what may be read or written: it describes the
// locations of a pull or push only after checking the request, and the engine checks every span
// against the region's announced size before Read / Write; the spans are checked once more here
// against the offered region (the remote key reaches all of it).
//
// Registered caches (unpooled memory) are mapped by their owner when they are registered (or
// when a link comes up) and their keys sent to the peer as a UCX active message
// (CacheKeysMessage); a described tensor the peer has no key for yet is streamed instead. Not
// reached this way: the published cache table. See ucx/ucx_process.h for when the process's
// worker starts.
#include <dirent.h>

#include <map>
#include <mutex>

#include "common/logging.h"
#include "transport/transport.h"
#include "transport/ucx/ucx_offer.h"
#include "transport/ucx/ucx_process.h"
#include "transport/ucx/ucx_worker.h"

namespace llm_datadist {

namespace {

// Bound on building the endpoint to a peer's worker at link time (the wire-up's round trip).
constexpr auto kConnectTimeout = std::chrono::seconds(5);

struct ProcessUcx {
  std::mutex mu;
  std::shared_ptr<ucx::UcxWorker> worker;  // null until an engine enabled UCX
  bool forced = false;
  bool cuda_capable = false;    // UCX lists a CUDA transport: local CUDA memory is reachable
  std::string transports;       // "tcp/lo, ..." for link_info's reason
  struct Mapped {
    uint64_t size;
    std::unique_ptr<ucx::MemoryRegion> region;
  };
  std::map<uint64_t, Mapped> regions;  // by base address
  std::map<uint64_t, std::string> map_failures;  // logged once per base
};

ProcessUcx &Process() {
  static ProcessUcx *state = new ProcessUcx();  // never destroyed: worker teardown at exit is UCX's
  return *state;
}

std::string JoinTransports(const std::vector<std::string> &names) {
  std::string out;
  for (const std::string &n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out.empty() ? "no transports listed" : out;
}

// The offer bytes the peer's ucx provider sent (empty: none).
const std::vector<uint8_t> &PeerOfferBytes(const PeerView &peer) { return peer.OfferOf(TransportKind::kUcx); }

// Bound on telling a peer that a cache is gone (OnCacheUnregistered has no deadline of its own).
constexpr auto kUnregisterNoticeTimeout = std::chrono::seconds(1);

class UcxTransport;
struct CacheKeysMessageHolder {
  ucx::CacheKeysMessage message;
};
constexpr size_t kMaxPendingLinks = 64;
constexpr size_t kMaxPendingMessages = 256;

// The live transports of this process by (local cluster, peer cluster): where a peer's cache
// keys message is delivered.
struct LinkTable {
  std::mutex mu;
  std::map<std::pair<uint64_t, uint64_t>, UcxTransport *> by_link;
  // Messages for a link whose transport is not built yet (the owner announces its caches as soon
  // as its side of the link is up, which can be before this side's); bounded per link and in
  // links, oldest dropped (the owner streams what this side has no key for).
  std::map<std::pair<uint64_t, uint64_t>, std::vector<CacheKeysMessageHolder>> pending;
};
LinkTable &Links() {
  static LinkTable *table = new LinkTable();
  return *table;
}

// A registered cache tensor of the peer, as its owner announced it.
struct PeerRange {
  uint64_t address = 0;
  uint64_t bytes = 0;
  std::string packed_rkey;
  std::mutex mu;                         // guards key
  std::unique_ptr<ucx::RemoteKey> key;   // unpacked on first use (not in the message handler)
};

class UcxTransport : public Transport {
 public:
  UcxTransport(std::shared_ptr<ucx::UcxWorker> worker, std::unique_ptr<ucx::Endpoint> ep,
               std::vector<ucx::OfferedRegion> regions, std::vector<std::unique_ptr<ucx::RemoteKey>> keys,
               bool local_cuda, uint64_t local_cluster, uint64_t peer_cluster)
      : worker_(std::move(worker)), regions_(std::move(regions)), keys_(std::move(keys)), ep_(std::move(ep)),
        local_cuda_(local_cuda), local_cluster_(local_cluster), peer_cluster_(peer_cluster) {
    std::vector<CacheKeysMessageHolder> early;
    {
      std::lock_guard<std::mutex> lock(Links().mu);
      Links().by_link[{local_cluster_, peer_cluster_}] = this;
      auto it = Links().pending.find({local_cluster_, peer_cluster_});
      if (it != Links().pending.end()) {
        early = std::move(it->second);
        Links().pending.erase(it);
      }
    }
    for (CacheKeysMessageHolder &m : early) OnPeerKeys(std::move(m.message));
  }
  ~UcxTransport() override {
    {
      std::lock_guard<std::mutex> lock(Links().mu);
      auto it = Links().by_link.find({local_cluster_, peer_cluster_});
      if (it != Links().by_link.end() && it->second == this) Links().by_link.erase(it);
    }
    {
      // Moved out and destroyed with no lock of ours held (a key's destruction takes the
      // worker's lock, which the message handler holds while it takes peer_mu_).
      std::map<int64_t, std::vector<std::shared_ptr<PeerRange>>> caches;
      std::map<uint64_t, std::shared_ptr<PeerRange>> by_address;
      std::vector<std::shared_ptr<PeerRange>> graveyard;
      {
        std::lock_guard<std::mutex> lock(peer_mu_);
        caches.swap(peer_caches_);
        by_address.swap(by_address_);
        graveyard.swap(graveyard_);
      }
    }
    {
      std::lock_guard<std::mutex> lock(owned_mu_);
      owned_.clear();
    }
    keys_.clear();  // before the endpoint (UCX's order)
    ep_.reset();
  }

  // A peer's cache keys message for this link. Runs in the worker's progress, with the worker's
  // lock held: ranges it drops go to graveyard_ (their keys are destroyed with the worker's lock,
  // later, outside the handler), and nothing here calls into UCX.
  void OnPeerKeys(ucx::CacheKeysMessage message) {
    std::lock_guard<std::mutex> lock(peer_mu_);
    auto old = peer_caches_.find(message.cache_id);
    if (old != peer_caches_.end()) {
      for (auto &range : old->second) {
        auto at = by_address_.find(range->address);
        if (at != by_address_.end() && at->second == range) by_address_.erase(at);
        graveyard_.push_back(std::move(range));
      }
      peer_caches_.erase(old);
    }
    if (message.op == ucx::CacheKeysMessage::Op::kRemove) return;
    std::vector<std::shared_ptr<PeerRange>> ranges;
    for (ucx::CacheKeysMessage::Range &r : message.ranges) {
      auto range = std::make_shared<PeerRange>();
      range->address = r.address;
      range->bytes = r.bytes;
      range->packed_rkey = std::move(r.packed_rkey);
      std::shared_ptr<PeerRange> &slot = by_address_[range->address];
      if (slot != nullptr) graveyard_.push_back(std::move(slot));
      slot = range;
      ranges.push_back(std::move(range));
    }
    peer_caches_[message.cache_id] = std::move(ranges);
  }

  DetailedStatus OnCacheRegistered(const RegisteredMemory &memory, Deadline deadline) override {
    const ucx::MemoryKind kind =
        memory.kind == MemoryKind::kCudaDevice ? ucx::MemoryKind::kCuda : ucx::MemoryKind::kHost;
    ucx::CacheKeysMessage message;
    message.sender_cluster = local_cluster_;
    message.receiver_cluster = peer_cluster_;
    message.cache_id = memory.cache_id;
    std::vector<std::unique_ptr<ucx::MemoryRegion>> mapped;
    for (const RegisteredMemory::Range &r : memory.ranges) {
      if (r.bytes == 0) continue;
      LLMDD_CHECK(message.ranges.size() < ucx::kMaxCacheRanges, LLM_FEATURE_NOT_ENABLED, "cache ",
                  memory.cache_id, " has over ", ucx::kMaxCacheRanges, " tensors");
      std::unique_ptr<ucx::MemoryRegion> region;
      LLMDD_RETURN_IF_ERROR(worker_->MapMemory(reinterpret_cast<void *>(r.address), r.bytes, kind, &region));
      message.ranges.push_back({r.address, r.bytes, region->packed_rkey()});
      mapped.push_back(std::move(region));
    }
    {
      std::lock_guard<std::mutex> lock(owned_mu_);
      owned_[memory.cache_id] = std::move(mapped);  // a second announcement replaces the first
    }
    return ep_->SendMessage(ucx::kCacheKeysMessageId, ucx::EncodeCacheKeys(message), deadline);
  }

  void OnCacheUnregistered(int64_t cache_id) override {
    {
      std::lock_guard<std::mutex> lock(owned_mu_);
      if (owned_.find(cache_id) == owned_.end()) return;
    }
    ucx::CacheKeysMessage message;
    message.op = ucx::CacheKeysMessage::Op::kRemove;
    message.sender_cluster = local_cluster_;
    message.receiver_cluster = peer_cluster_;
    message.cache_id = cache_id;
    // Told before the memory is unmapped; a peer that does not hear it only reads what this
    // side describes, and this side no longer describes the cache.
    DetailedStatus told = ep_->SendMessage(ucx::kCacheKeysMessageId, ucx::EncodeCacheKeys(message),
                                           Clock::now() + kUnregisterNoticeTimeout);
    if (!told.ok()) LLMDD_LOG(kDebug, "ucx: cache ", cache_id, " removal not told: ", told.message());
    std::lock_guard<std::mutex> lock(owned_mu_);
    owned_.erase(cache_id);
  }

  TransportKind kind() const override { return TransportKind::kUcx; }
  Capabilities caps() const override {
    Capabilities c;
    c.one_sided = true;
    c.writes = true;
    for (const ucx::OfferedRegion &r : regions_) {
      if (r.memory == ucx::MemoryKind::kCuda) {
        c.cuda_pool = true;
      } else {
        c.host_pool = true;
      }
    }
    return c;
  }
  bool Reaches(const RemoteMemory &where, MemoryKind local_kind) override {
    if (!IsHostAddressable(local_kind) && !local_cuda_) return false;
    if (where.space == RemoteMemory::Space::kRawHost) {
      std::lock_guard<std::mutex> lock(peer_mu_);
      return !by_address_.empty();  // which addresses: Read answers per span
    }
    return Find(where.region_id) >= 0;
  }
  DetailedStatus Read(const std::vector<RemoteSpan> &spans, MemoryKind local_kind,
                      Deadline deadline) override {
    return Rma(true, spans, local_kind, deadline);
  }
  DetailedStatus Write(const std::vector<RemoteSpan> &spans, MemoryKind local_kind,
                       Deadline deadline) override {
    return Rma(false, spans, local_kind, deadline);
  }

 private:
  int Find(uint8_t id) const {
    for (size_t i = 0; i < regions_.size(); ++i) {
      if (regions_[i].id == id) return static_cast<int>(i);
    }
    return -1;
  }

  DetailedStatus Rma(bool get, const std::vector<RemoteSpan> &spans, MemoryKind local_kind,
                     Deadline deadline) {
    LLMDD_CHECK(IsHostAddressable(local_kind) || local_cuda_, LLM_FEATURE_NOT_ENABLED,
                "this UCX has no CUDA transport: local CUDA memory is not reachable by ucx");
    std::vector<std::shared_ptr<PeerRange>> dropped;  // destroyed on return, no lock held
    {
      std::lock_guard<std::mutex> lock(peer_mu_);
      dropped.swap(graveyard_);
    }
    std::vector<ucx::RmaOp> ops;
    ops.reserve(spans.size());
    std::vector<std::shared_ptr<PeerRange>> raw(spans.size());  // the peer range of each raw span
    for (size_t k = 0; k < spans.size(); ++k) {
      const RemoteSpan &s = spans[k];
      if (s.where.space == RemoteMemory::Space::kRawHost) {
        raw[k] = FindPeerRange(s.offset, s.bytes);
        LLMDD_CHECK(raw[k] != nullptr, LLM_FEATURE_NOT_ENABLED, "ucx has no key for the peer's memory at ",
                    s.offset, " (+", s.bytes, ")");
        ops.push_back({s.local, s.offset, nullptr, s.bytes});
        continue;
      }
      const int i = Find(s.where.region_id);
      LLMDD_CHECK(i >= 0, LLM_FEATURE_NOT_ENABLED, "ucx does not reach this memory of the peer");
      const ucx::OfferedRegion &r = regions_[i];
      LLMDD_CHECK(s.offset <= r.size && s.bytes <= r.size - s.offset, LLM_PARAM_INVALID,
                  "span [", s.offset, ", +", s.bytes, ") is outside the peer's region ",
                  int{r.id}, " of ", r.size, " bytes");
      ops.push_back({s.local, r.base + s.offset, keys_[i].get(), s.bytes});
    }
    for (size_t k = 0; k < spans.size(); ++k) {
      if (raw[k] == nullptr) continue;
      std::lock_guard<std::mutex> lock(raw[k]->mu);
      if (raw[k]->key == nullptr) LLMDD_RETURN_IF_ERROR(ep_->UnpackRkey(raw[k]->packed_rkey, &raw[k]->key));
      ops[k].rkey = raw[k]->key.get();
    }
    return get ? ep_->Get(ops, deadline) : ep_->Put(ops, deadline);
  }

  // The announced peer range holding [address, address + bytes), or null.
  std::shared_ptr<PeerRange> FindPeerRange(uint64_t address, uint64_t bytes) {
    std::lock_guard<std::mutex> lock(peer_mu_);
    auto it = by_address_.upper_bound(address);
    if (it == by_address_.begin()) return nullptr;
    --it;
    const PeerRange &r = *it->second;
    if (address - r.address > r.bytes || bytes > r.bytes - (address - r.address)) return nullptr;
    return it->second;
  }

  std::shared_ptr<ucx::UcxWorker> worker_;
  std::vector<ucx::OfferedRegion> regions_;
  std::vector<std::unique_ptr<ucx::RemoteKey>> keys_;  // parallel to regions_
  std::unique_ptr<ucx::Endpoint> ep_;
  const bool local_cuda_;
  const uint64_t local_cluster_;
  const uint64_t peer_cluster_;
  // The peer's registered caches (its cache keys messages).
  std::mutex peer_mu_;
  std::map<int64_t, std::vector<std::shared_ptr<PeerRange>>> peer_caches_;
  std::map<uint64_t, std::shared_ptr<PeerRange>> by_address_;
  std::vector<std::shared_ptr<PeerRange>> graveyard_;  // dropped by OnPeerKeys, destroyed by Rma
  // This side's registered caches, mapped for the peer.
  std::mutex owned_mu_;
  std::map<int64_t, std::vector<std::unique_ptr<ucx::MemoryRegion>>> owned_;
};

class UcxTransportProvider final : public TransportProvider {
 public:
  TransportKind kind() const override { return TransportKind::kUcx; }
  // llmdd.Transport=ucx: ucx serves even on one host, over whatever UCX_TLS allows (tests).
  bool can_be_forced() const override { return true; }

  // The process's worker, where this engine wants it (ucx/ucx_process.h).
  DetailedStatus Start(const ProcessSetup &setup) const override {
    return ucx::EnableUcx(setup.forced == TransportKind::kUcx);
  }

  void ForgetRegions(const std::vector<LocalRegion> &regions) const override { ucx::ForgetUcxRegions(regions); }

  std::vector<uint8_t> Offer(const std::vector<LocalRegion> &local_regions) const override {
    ProcessUcx &p = Process();
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.worker == nullptr) return {};
    ucx::UcxOffer offer;
    offer.worker_address = p.worker->address();
    for (const LocalRegion &r : local_regions) {
      if (r.kind == RegionKind::kCacheTable || r.base == nullptr || r.size == 0) continue;
      const uint64_t base = reinterpret_cast<uint64_t>(r.base);
      const ucx::MemoryKind memory =
          r.kind == RegionKind::kCudaPool ? ucx::MemoryKind::kCuda : ucx::MemoryKind::kHost;
      auto it = p.regions.find(base);
      if (it != p.regions.end() && (it->second.size != r.size || it->second.region->kind() != memory)) {
        p.regions.erase(it);  // another pool at the same address: map it anew
        it = p.regions.end();
      }
      if (it == p.regions.end()) {
        std::unique_ptr<ucx::MemoryRegion> mapped;
        DetailedStatus s = p.worker->MapMemory(const_cast<void *>(r.base), r.size, memory, &mapped);
        if (!s.ok()) {
          if (p.map_failures.emplace(base, s.message()).second) {
            LLMDD_LOG(kWarning, "ucx: region ", int{r.id}, " (", r.size, " bytes) not mapped, "
                      "peers stream it instead: ", s.message());
          }
          continue;
        }
        it = p.regions.emplace(base, ProcessUcx::Mapped{r.size, std::move(mapped)}).first;
      }
      ucx::OfferedRegion offered;
      offered.id = r.id;
      offered.kind = static_cast<uint8_t>(r.kind);
      offered.memory = memory;
      offered.base = base;
      offered.size = r.size;
      offered.packed_rkey = it->second.region->packed_rkey();
      offer.regions.push_back(std::move(offered));
      if (offer.regions.size() == ucx::kMaxOfferedRegions) break;
    }
    if (offer.regions.empty()) return {};  // nothing a peer could read (Decide would refuse it)
    return ucx::EncodeOffer(offer);
  }

  ProviderDecision Decide(const PeerView &peer) const override {
    ProcessUcx &p = Process();
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.worker == nullptr) {
      return {false, "UCX not started here (llmdd.Transport=ucx, or an RDMA transport, starts it)"};
    }
    if (PeerOfferBytes(peer).empty()) return {false, "the peer offers no UCX"};
    const bool forced = peer.forced == TransportKind::kUcx;
    if (!forced && peer.same_host) {
      return {false, "same host: UCX is for links between hosts (shm / cuda_ipc serve this one)"};
    }
    ucx::UcxOffer offer;
    DetailedStatus decoded = ucx::DecodeOffer(PeerOfferBytes(peer), &offer);
    if (!decoded.ok()) return {false, decoded.message()};
    if (offer.regions.empty()) return {false, "the peer offers UCX but no region it mapped"};
    return {true, detail::Concat(forced ? "ucx forced (llmdd.Transport=ucx)"
                                                : "different hosts, both ends have UCX",
                                 ": one-sided gets and puts over UCX (", p.transports, ")")};
  }

  DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const override {
    ucx::UcxOffer offer;
    LLMDD_RETURN_IF_ERROR(ucx::DecodeOffer(PeerOfferBytes(peer), &offer));
    std::shared_ptr<ucx::UcxWorker> worker;
    bool cuda = false;
    {
      ProcessUcx &p = Process();
      std::lock_guard<std::mutex> lock(p.mu);
      worker = p.worker;
      cuda = p.cuda_capable;
    }
    LLMDD_CHECK(worker != nullptr, LLM_FEATURE_NOT_ENABLED, "UCX not started here");
    std::unique_ptr<ucx::Endpoint> ep;
    LLMDD_RETURN_IF_ERROR(worker->Connect(offer.worker_address, Clock::now() + kConnectTimeout, &ep));
    std::vector<std::unique_ptr<ucx::RemoteKey>> keys;
    for (const ucx::OfferedRegion &r : offer.regions) {
      std::unique_ptr<ucx::RemoteKey> key;
      LLMDD_RETURN_IF_ERROR(ep->UnpackRkey(r.packed_rkey, &key));
      keys.push_back(std::move(key));
    }
    *out = std::make_unique<UcxTransport>(worker, std::move(ep), std::move(offer.regions), std::move(keys), cuda,
                                          peer.local_cluster_id, peer.peer_cluster_id);
    return DetailedStatus::Ok();
  }
};

}  // namespace

const TransportProvider &UcxProvider() {
  static const UcxTransportProvider provider;
  return provider;
}

namespace ucx {

bool HasRdmaTransport(const std::vector<std::string> &transports) {
  for (const std::string &t : transports) {
    for (const char *prefix : {"rc", "dc", "ud", "srd", "gga"}) {
      if (t.rfind(prefix, 0) == 0) return true;
    }
  }
  return false;
}

bool HasRdmaDevice() {
  DIR *dir = opendir("/sys/class/infiniband");
  if (dir == nullptr) return false;
  bool found = false;
  while (dirent *entry = readdir(dir)) {
    if (entry->d_name[0] != '.') {
      found = true;
      break;
    }
  }
  closedir(dir);
  return found;
}

DetailedStatus EnableUcx(bool forced) {
  ProcessUcx &p = Process();
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.worker != nullptr) return DetailedStatus::Ok();
  // Auto: a host without an RDMA device (every verbs, RoCE or EFA device is listed in
  // /sys/class/infiniband) has no reason to load UCX at all.
  if (!forced && !HasRdmaDevice()) return DetailedStatus::Ok();
  const UcxInfo info = Probe();
  if (!info.available) {
    LLMDD_CHECK(!forced, LLM_FEATURE_NOT_ENABLED, "llmdd.Transport=ucx: ", info.reason);
    return DetailedStatus::Ok();
  }
  if (!forced && !HasRdmaTransport(info.transports)) return DetailedStatus::Ok();
  UcxWorker::Options options;
  options.progress_thread = true;  // peers' gets over emulating transports need the owner's
  options.exclude_tcp = !forced;
  DetailedStatus created = UcxWorker::Create(options, &p.worker);
  if (!created.ok()) {
    p.worker.reset();
    if (forced) return created;
    LLMDD_LOG(kWarning, "UCX has an RDMA transport but could not start (", created.message(),
              "); links between hosts use tcp");
    return DetailedStatus::Ok();
  }
  p.forced = forced;
  p.transports = JoinTransports(info.transports);
  // A peer's cache keys reach the transport of its link (runs in the worker's progress).
  DetailedStatus handler = p.worker->SetMessageHandler(ucx::kCacheKeysMessageId, [](const uint8_t *data, size_t bytes) {
    ucx::CacheKeysMessage message;
    DetailedStatus decoded = ucx::DecodeCacheKeys(data, bytes, &message);
    if (!decoded.ok()) {
      LLMDD_LOG(kWarning, "ucx: ", decoded.message(), "; ignored");
      return;
    }
    std::lock_guard<std::mutex> lock(Links().mu);
    const std::pair<uint64_t, uint64_t> link{message.receiver_cluster, message.sender_cluster};
    auto it = Links().by_link.find(link);
    if (it != Links().by_link.end()) {
      it->second->OnPeerKeys(std::move(message));
      return;
    }
    auto &queue = Links().pending[link];
    if (Links().pending.size() > kMaxPendingLinks) {
      Links().pending.erase(link);
      return;
    }
    if (queue.size() == kMaxPendingMessages) queue.erase(queue.begin());
    queue.push_back({std::move(message)});
  });
  if (!handler.ok()) {
    p.worker.reset();
    if (forced) return handler;
    LLMDD_LOG(kWarning, "UCX could not start (", handler.message(), "); links between hosts use tcp");
    return DetailedStatus::Ok();
  }
  for (const std::string &t : info.transports) p.cuda_capable = p.cuda_capable || t.rfind("cuda", 0) == 0;
  LLMDD_LOG(kInfo, "UCX ", info.version, " started (", forced ? "forced" : "RDMA available", "): ",
            p.transports);
  if (forced && !HasRdmaTransport(info.transports)) {
    LLMDD_LOG(kWarning, "llmdd.Transport=ucx without an RDMA transport: UCX emulates gets over ",
              p.transports, " in the owner's worker, slower than tcp, and a peer dying mid-transfer "
              "can abort the owner (a UCX limitation); use it for tests");
  }
  return DetailedStatus::Ok();
}

void ForgetUcxRegions(const std::vector<LocalRegion> &regions) {
  ProcessUcx &p = Process();
  std::lock_guard<std::mutex> lock(p.mu);
  for (const LocalRegion &r : regions) {
    p.regions.erase(reinterpret_cast<uint64_t>(r.base));
    p.map_failures.erase(reinterpret_cast<uint64_t>(r.base));
  }
}

}  // namespace ucx

}  // namespace llm_datadist
