// SPDX-License-Identifier: Apache-2.0
// shm: the peer's host and CPU-device pools (and its published cache table), memfds it passed
// over the pool channel and this side mapped read-only during the handshake. Reads are memcpy
// (or one device copy into local CUDA memory).
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/logging.h"
#include "engine/copy_engine.h"
#include "transport/transport.h"

namespace llm_datadist {

namespace {

class ShmTransport : public Transport {
 public:
  // Only regions that were mapped; the link owns (and unmaps) the mappings and outlives this.
  explicit ShmTransport(const std::vector<RemoteRegion> &regions) {
    for (const RemoteRegion &r : regions) {
      if (r.mapped == nullptr) continue;
      if (r.kind == RegionKind::kCacheTable) table_ = r;
      else pools_.push_back(r);
    }
  }
  TransportKind kind() const override { return TransportKind::kShm; }
  Capabilities caps() const override {
    Capabilities c;
    c.one_sided = true;
    c.host_pool = true;
    c.published_table = table_.mapped != nullptr;
    return c;
  }
  bool Reaches(const RemoteMemory &where, MemoryKind local_kind) override {
    return where.space == RemoteMemory::Space::kRegion && Find(where.region_id) != nullptr;
  }
  DetailedStatus Read(const std::vector<RemoteSpan> &spans, MemoryKind local_kind, Deadline deadline) override {
    std::vector<CopyRegion> copies;
    copies.reserve(spans.size());
    for (const RemoteSpan &s : spans) {
      const RemoteRegion *region = s.where.space == RemoteMemory::Space::kRegion ? Find(s.where.region_id) : nullptr;
      LLMDD_CHECK(region != nullptr && s.offset <= region->size && s.bytes <= region->size - s.offset, LLM_FAILED,
                  "internal: shm read outside the peer's mapped regions");
      copies.push_back({s.local, region->mapped + s.offset, s.bytes});
    }
    return CopyRegions(copies, local_kind, MemoryKind::kHost);
  }
  std::optional<TableEntry> LookupPublished(const TableKey &key) override {
    if (table_.mapped == nullptr) return std::nullopt;
    // Where each key was found last (a bounded memo: forgotten wholesale when it fills). The
    // lookup itself runs outside the lock: callers on other threads look up at the same time.
    // The memo is written only when the hint moved (the common pull finds its key where it was).
    std::optional<uint64_t> known;
    {
      std::lock_guard<std::mutex> lock(hints_mutex_);
      auto it = hints_.find(key);
      if (it != hints_.end()) known = it->second;
    }
    uint64_t hint = known.value_or(0);
    std::optional<TableEntry> found = LookupCacheTable(table_.mapped, table_.size, key, &hint);
    if (found && known == hint) return found;
    std::lock_guard<std::mutex> lock(hints_mutex_);
    if (!found) {
      hints_.erase(key);
    } else {
      if (hints_.size() >= kMaxHints) hints_.clear();
      hints_[key] = hint;
    }
    return found;
  }

 private:
  const RemoteRegion *Find(uint8_t id) const {
    const RemoteRegion *found = nullptr;  // the last one announced with that id, as the link checks
    for (const RemoteRegion &r : pools_)
      if (r.id == id) found = &r;
    return found;
  }
  static constexpr size_t kMaxHints = 4096;
  std::vector<RemoteRegion> pools_;
  RemoteRegion table_;
  std::mutex hints_mutex_;
  std::unordered_map<TableKey, uint64_t, TableKeyHash> hints_;
};

class ShmTransportProvider final : public TransportProvider {
 public:
  TransportKind kind() const override { return TransportKind::kShm; }
  ProviderDecision Decide(const PeerView &peer) const override {
    if (peer.pools_shared) return {true, "same host: pools shared through memfd"};
    return {false, peer.pools_reason};
  }
  DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const override {
    *out = std::make_unique<ShmTransport>(*peer.regions);
    return DetailedStatus::Ok();
  }
};

}  // namespace

const TransportProvider &ShmProvider() {
  static const ShmTransportProvider provider;
  return provider;
}

}  // namespace llm_datadist
