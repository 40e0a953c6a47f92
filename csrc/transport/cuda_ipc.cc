// SPDX-License-Identifier: Apache-2.0
// cuda_ipc: the peer's CUDA pool, opened in this process from the IPC handle its handshake
// announced. Opened on first use (a link that never reads device memory never opens it, and
// never loads CUDA for it); a handle that fails to open stays failed and the pool's caches are
// streamed over the link instead.
#include <mutex>

#include "common/logging.h"
#include "engine/copy_engine.h"
#include "transport/transport.h"

namespace llm_datadist {

namespace {

class CudaIpcTransport : public Transport {
 public:
  CudaIpcTransport(uint64_t peer_cluster_id, int device_ordinal, const std::vector<RemoteRegion> &regions)
      : peer_cluster_id_(peer_cluster_id), device_ordinal_(device_ordinal) {
    for (const RemoteRegion &r : regions)
      if (r.has_ipc && r.mapped == nullptr && r.kind != RegionKind::kCacheTable)
        pools_.push_back({r.id, r.size, r.ipc_handle});
  }
  ~CudaIpcTransport() override {
    for (Pool &p : pools_)
      if (p.ptr != nullptr && cuda::Driver() != nullptr)
        cuda::Driver()->cuIpcCloseMemHandle(static_cast<cuda::CUdeviceptr>(reinterpret_cast<uintptr_t>(p.ptr)));
  }
  TransportKind kind() const override { return TransportKind::kCudaIpc; }
  Capabilities caps() const override {
    Capabilities c;
    c.one_sided = true;
    c.cuda_pool = true;
    return c;
  }
  bool Reaches(const RemoteMemory &where, MemoryKind local_kind) override {
    if (where.space != RemoteMemory::Space::kRegion || cuda::Driver() == nullptr) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    Pool *pool = FindLocked(where.region_id);
    if (pool == nullptr) return false;
    if (pool->ptr == nullptr && !pool->failed) Open(*pool);
    return pool->ptr != nullptr;
  }
  DetailedStatus Read(const std::vector<RemoteSpan> &spans, MemoryKind local_kind, Deadline deadline) override {
    std::vector<CopyRegion> copies;
    copies.reserve(spans.size());
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (const RemoteSpan &s : spans) {
        Pool *pool = s.where.space == RemoteMemory::Space::kRegion ? FindLocked(s.where.region_id) : nullptr;
        LLMDD_CHECK(pool != nullptr && pool->ptr != nullptr, LLM_FEATURE_NOT_ENABLED, "the CUDA pool of cluster ",
                    peer_cluster_id_, " is not open here");
        LLMDD_CHECK(s.offset <= pool->size && s.bytes <= pool->size - s.offset, LLM_FAILED,
                    "internal: cuda_ipc read outside the peer's CUDA pool");
        copies.push_back({s.local, static_cast<const uint8_t *>(pool->ptr) + s.offset, s.bytes});
      }
    }
    return CopyRegions(copies, local_kind, MemoryKind::kCudaDevice);
  }
  bool opened() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const Pool &p : pools_)
      if (p.ptr != nullptr) return true;
    return false;
  }

 private:
  struct Pool {
    uint8_t id;
    uint64_t size;
    cuda::CUipcMemHandle handle;
    void *ptr = nullptr;  // open, once opened
    bool failed = false;
  };
  Pool *FindLocked(uint8_t id) {
    Pool *found = nullptr;  // the last one announced with that id, as the link checks
    for (Pool &p : pools_)
      if (p.id == id) found = &p;
    return found;
  }
  void Open(Pool &pool) {
    std::optional<cuda::ScopedDeviceContext> ctx;
    cuda::CUdeviceptr ptr = 0;
    DetailedStatus opened = cuda::ScopedDeviceContext::Enter(std::max(0, device_ordinal_), &ctx);
    if (opened.ok())
      opened = cuda::CheckCu(
          cuda::Driver()->cuIpcOpenMemHandle_v2(&ptr, pool.handle, cuda::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS),
          "cuIpcOpenMemHandle_v2");
    if (opened.ok()) {
      pool.ptr = reinterpret_cast<void *>(static_cast<uintptr_t>(ptr));
    } else {
      pool.failed = true;
      LLMDD_LOG(kWarning, "cuda_ipc to cluster ", peer_cluster_id_, " unavailable (", opened.message(),
                "); device memory goes over tcp");
    }
  }

  const uint64_t peer_cluster_id_;
  const int device_ordinal_;
  mutable std::mutex mutex_;  // guards the lazy opening
  std::vector<Pool> pools_;
};

class CudaIpcTransportProvider final : public TransportProvider {
 public:
  TransportKind kind() const override { return TransportKind::kCudaIpc; }
  ProviderDecision Decide(const PeerView &peer) const override {
    bool offered = false;
    for (const RemoteRegion &r : *peer.regions) offered = offered || (r.has_ipc && r.mapped == nullptr);
    if (!offered) return {false, "the peer offers no CUDA pool over CUDA IPC"};
    // The same authenticated channel as shm: an IPC handle is worth something on this host only.
    if (!peer.pools_shared || !peer.same_host) return {false, peer.pools_reason};
    return {true, "same host: the CUDA pool opened over CUDA IPC"};
  }
  DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const override {
    *out = std::make_unique<CudaIpcTransport>(peer.peer_cluster_id, peer.device_ordinal, *peer.regions);
    return DetailedStatus::Ok();
  }
};

}  // namespace

const TransportProvider &CudaIpcProvider() {
  static const CudaIpcTransportProvider provider;
  return provider;
}

}  // namespace llm_datadist
