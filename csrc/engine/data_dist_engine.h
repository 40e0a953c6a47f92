// SPDX-License-Identifier: Apache-2.0
// DataDistEngine: one LLM-DataDist instance (a "cluster"). Parses the init options, owns the
// memory pools and the cache registry, and carries out cache operations. The Python binding
// and the upstream-style C++ class (llm_datadist.h) are both thin layers over it.
//
// Thread-safety: cache operations may run concurrently from several threads; Initialize and
// Finalize must not run concurrently with anything else (upstream's rule).
#ifndef LLM_DATADIST_ENGINE_DATA_DIST_ENGINE_H_
#define LLM_DATADIST_ENGINE_DATA_DIST_ENGINE_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cache/cache_registry.h"
#include "cache/cache_table.h"
#include "common/metrics.h"
#include "link/link_manager.h"
#include "link/messages.h"
#include "llm_datadist/status.h"
#include "llm_datadist/types.h"
#include "memory/memory_pool.h"

namespace llm_datadist {

enum class DeviceBackend : uint8_t { kCuda, kCpu };
const char *DeviceBackendName(DeviceBackend backend);

struct EngineOptions {
  int32_t device_id = 0;
  int64_t sync_kv_timeout_ms = 1000;
  std::optional<PoolConfig> device_pool;
  std::optional<PoolConfig> host_pool;
  std::string listen_ip_info;  // "ip:port" or "[ipv6]:port"; empty: not listening
  DeviceBackend device_backend = DeviceBackend::kCpu;
  std::string device_backend_reason;  // why this backend was chosen (for doctor / logs)
  std::string link_secret;            // llmdd.LinkSecret or LLMDD_LINK_SECRET
  // llmdd.Transport or LLMDD_TRANSPORT naming a transport that can be forced; nullopt: "auto".
  std::optional<TransportKind> forced_transport;
  std::vector<uint32_t> allowed_uids;  // llmdd.AllowedUids: other uids allowed on the pool channel
  bool require_secret = false;         // llmdd.RequireSecret=1: no non-loopback listener without a secret
  bool metrics = true;                 // llmdd.Metrics=0 or LLMDD_METRICS=0: record nothing
  int64_t poll_spin_us = kDefaultPollSpinUs;  // llmdd.PollSpinUs or LLMDD_POLL_SPIN_US (link/link.h)
};

// "ip:port" or "[ipv6]:port" -> (ip, port); LLM_PARAM_INVALID naming the value otherwise.
DetailedStatus ParseIpPort(const std::string &text, std::string *ip, uint16_t *port);

// Which layers of each side a transfer moves, as upstream's API names them. A layer is
// tensor_num_per_layer consecutive tensors; a cache's last, shorter group (or all of a cache with
// fewer tensors than that) counts as one layer. Ranges are [begin, end) layer indices; -1, -1 is
// no range given. The engine resolves them against the local cache (PlanTransfer), the owner
// checks the remote tensors it is asked for.
struct LayerSelection {
  int64_t remote_begin = -1, remote_end = -1;
  int64_t local_begin = -1, local_end = -1;
  int64_t tensor_num_per_layer = 2;  // upstream's default (kDefaultTensorNumPerLayer)
};

// A pull or push as the API asks for it.
struct TransferArgs {
  uint64_t remote_cluster_id = 0;
  RemoteKeyKind key_kind = RemoteKeyKind::kCacheKey;  // link/messages.h
  CacheKeySpec key;                // kCacheKey
  int64_t remote_cache_id = -1;    // kCacheIdAndIndex
  uint32_t remote_batch_index = 0;  // kCacheIdAndIndex
  uint64_t blocks_model_id = 0;    // kBlocksKey
  int64_t local_cache_id = -1;
  bool blocks_api = false;         // pull_blocks / push_blocks (else pull_cache / push_cache)
  uint32_t local_batch_index = 0;  // pull_cache destination slot / push_cache source slot
  int64_t size = -1;               // pull_cache bytes per tensor
  // A push from a contiguous slot into remote blocks (upstream's transfer_cache_async with
  // dst_block_memory_size): the remote block size the slot is cut into; 0 otherwise.
  uint64_t remote_block_bytes = 0;
  // A push by address: where in the local slot its `size` bytes start (a piece of a contiguous
  // slot pushed into one remote block named by address); 0 otherwise.
  uint64_t local_offset = 0;
  std::vector<uint64_t> remote_blocks;
  std::vector<uint64_t> local_blocks;
  LayerSelection layers;
};

struct LinkInfo {
  uint64_t cluster_id = 0;
  std::string transport;
  std::string reason;
  std::string state;
  std::string broken_reason;
  std::string remote_address;
  std::string channel;  // what carries the link's frames: "unix" (one host) or "tcp"
  int peer_pid = -1;
  bool cuda_ipc = false;         // the peer offers its device pool over CUDA IPC, on this host
  bool cuda_ipc_opened = false;  // ... and this side has opened it (device pulls use it)
  int64_t millis_since_rx = 0;
  uint64_t bytes_pulled = 0, bytes_pushed = 0, bytes_served = 0, pulls = 0, pushes = 0, errors = 0;
  uint64_t bytes_pushed_one_sided = 0;  // of bytes_pushed, written by a transport (one-sided puts)
  uint64_t data_bytes_sent = 0;         // data bytes this end sent on the link's connection
  uint64_t held = 0;  // owner side: transfers the peer reads or writes now (described, not yet released)
};

// One link's part of a metrics snapshot.
struct LinkMetricsSnapshot {
  uint64_t cluster_id = 0;
  std::string transport;
  std::string state;    // "active" / "broken"
  std::string channel;  // "unix" / "tcp"
  int peer_pid = -1;
  MetricsSnapshot metrics;
};

// Everything metrics() reports: process totals (every operation of this engine, including those
// that failed before a link was found), link state changes, each link, the pools.
struct EngineMetricsSnapshot {
  bool enabled = true;
  uint64_t cluster_id = 0;
  MetricsSnapshot totals;
  MetricsSnapshot unlinked;  // the operations that failed before a link was found (not yet linked, ...)
  uint64_t links_up = 0, links_broken = 0, links_closed = 0;
  std::vector<LinkMetricsSnapshot> links;
  std::optional<PoolStats> host_pool, device_pool;
};

// Parses upstream option keys (Python's ge.exec.deviceId and C++'s llm.DeviceId, ...).
DetailedStatus ParseEngineOptions(const std::map<std::string, std::string> &options, EngineOptions *out);

// What a local cache operation sees of a cache: an engine cache (cache_id >= 0, looked up in
// the registry) or caller-described memory (cache_id -1, e.g. Cache.create_cpu_cache).
struct CacheRef {
  int64_t cache_id = -1;
  CacheDesc desc;
  std::vector<uintptr_t> tensor_addrs;
  bool is_blocks = true;
};

// A pinned tensor: the entry keeps the memory valid while the pin lives.
struct TensorPin {
  std::shared_ptr<CacheEntry> entry;
  void *data = nullptr;
  uint64_t bytes = 0;
  MemoryKind memory_kind = MemoryKind::kHost;
  int device_ordinal = -1;
};

class DataDistEngine : public LinkHandler {
 public:
  DataDistEngine(uint64_t cluster_id, LlmRole role);
  ~DataDistEngine() override;

  DetailedStatus Initialize(const std::map<std::string, std::string> &options);
  void Finalize();
  bool initialized() const { return initialized_; }
  uint64_t cluster_id() const { return cluster_id_; }
  LlmRole role() const { return role_; }
  void set_role(LlmRole role) { role_ = role; }
  const EngineOptions &options() const { return options_; }

  DetailedStatus AllocateCache(const CacheDesc &desc, const std::vector<CacheKeySpec> &keys,
                               std::shared_ptr<CacheEntry> *out);
  DetailedStatus AllocateBlocksCache(const CacheDesc &desc, const std::optional<BlocksKeySpec> &key,
                                     std::shared_ptr<CacheEntry> *out);
  DetailedStatus DeallocateCache(int64_t cache_id);
  DetailedStatus DeallocateBlocksCache(int64_t cache_id);
  DetailedStatus RemoveCacheKey(const CacheKeySpec &key);
  DetailedStatus RegisterCache(const CacheDesc &desc, const std::vector<uintptr_t> &addrs,
                               const std::vector<CacheKeySpec> &keys, std::shared_ptr<CacheEntry> *out);
  DetailedStatus RegisterBlocksCache(const CacheDesc &desc, const std::vector<uintptr_t> &addrs,
                                     const std::optional<BlocksKeySpec> &key,
                                     std::shared_ptr<CacheEntry> *out);
  DetailedStatus UnregisterCache(int64_t cache_id);

  // copy_cache: one batch slot of every tensor, `size` bytes (-1: to the slot's end) from `offset`.
  DetailedStatus CopyCache(int64_t dst_cache_id, int64_t src_cache_id, uint32_t dst_batch_index,
                           uint32_t src_batch_index, uint64_t offset, int64_t size);
  // copy_blocks: within one blocks cache, block src -> each of its dst blocks.
  DetailedStatus CopyBlocks(int64_t cache_id,
                            const std::vector<std::pair<uint64_t, std::vector<uint64_t>>> &src_to_dsts);
  // CopyKvBlocks (upstream C++): src_blocks[i] of `src` -> dst_blocks_list[j][i] of `dst`.
  DetailedStatus CopyBlocksBetween(int64_t src_cache_id, int64_t dst_cache_id,
                                   const std::vector<uint64_t> &src_blocks,
                                   const std::vector<std::vector<uint64_t>> &dst_blocks_list);
  // swap_blocks: host <-> device, exactly one side on the host.
  DetailedStatus SwapBlocks(const CacheRef &src, const CacheRef &dst,
                            const std::vector<std::pair<uint64_t, uint64_t>> &src_to_dst);

  // ---- links and transfers (transfer.cc) ----
  // Starts or moves the listener ("ip:port"), or stops it (empty); LLM_EXIST_LINK while linked.
  DetailedStatus SwitchRole(LlmRole role, const std::string &listen_ip_info);
  // Rank-table links (LLMDataDist.link): listens at ip:port unless already listening there
  // (or on 0.0.0.0 at that port). Unlike SwitchRole it never moves a listener and does not
  // mind existing links: a listener elsewhere is LLM_PARAM_INVALID naming both addresses.
  DetailedStatus EnsureListening(const std::string &ip, uint16_t port);
  std::vector<DetailedStatus> LinkClusters(const std::vector<LinkTarget> &targets, int32_t timeout_ms);
  std::vector<DetailedStatus> UnlinkClusters(const std::vector<uint64_t> &cluster_ids, int32_t timeout_ms, bool force);
  // Pull and Push record the operation's metrics around PullUnmetered / PushUnmetered.
  DetailedStatus Pull(const TransferArgs &args);
  DetailedStatus Push(const TransferArgs &args);
  EngineMetricsSnapshot GetMetrics() const;
  std::optional<LinkInfo> GetLinkInfo(uint64_t cluster_id) const;
  std::vector<uint64_t> LinkedClusters() const;
  // Links to or from that cluster installed since Initialize (see LinkManager::links_installed).
  uint64_t LinksInstalled(uint64_t cluster_id) const;
  std::string ListenAddress() const;
  DetailedStatus OnPeerFrame(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) override;
  void OnLinkUp(Link &link) override;
  void OnLinkDown(Link &link, bool broken) override;

  DetailedStatus PinTensor(int64_t cache_id, uint32_t tensor_index, TensorPin *out) const;
  std::shared_ptr<CacheEntry> FindCache(int64_t cache_id) const { return registry_.Find(cache_id); }
  std::optional<PoolStats> GetPoolStats(CachePlacement placement) const;
  const CacheRegistry &registry() const { return registry_; }

 private:
  DetailedStatus CheckInitialized(const char *operation) const;
  DetailedStatus NewEntry(const CacheDesc &desc, bool is_blocks, bool is_registered,
                          std::shared_ptr<CacheEntry> *out);
  DetailedStatus Allocate(const CacheDesc &desc, bool is_blocks, const std::vector<CacheKeySpec> &keys,
                          const std::optional<BlocksKeySpec> &blocks_key, std::shared_ptr<CacheEntry> *out);
  DetailedStatus Register(const CacheDesc &desc, bool is_blocks, const std::vector<uintptr_t> &addrs,
                          const std::vector<CacheKeySpec> &keys, const std::optional<BlocksKeySpec> &blocks_key,
                          std::shared_ptr<CacheEntry> *out);
  DetailedStatus ResolveRef(const CacheRef &ref, const char *which, std::shared_ptr<CacheEntry> *out) const;
  std::vector<LocalRegion> LocalRegions();
  // Keeps the published cache table (cache/cache_table.h) in step with the registry: a key is
  // published once bound (if still bound to `cache` then), and unpublished before the memory it
  // names may be freed, so that a peer which read it one-sided and then finds the key still
  // naming the same cache knows its bytes came from that cache.
  void PublishKey(const TableKey &key, const CacheEntry &cache);
  void PublishPrefixKeys(const std::vector<CacheKeySpec> &keys, const CacheEntry &cache);
  // Unpublishes what names `cache` when removing it may free its memory (an allocated cache;
  // registered memory is the caller's to free after unregister). Null: nothing to do.
  void UnpublishBeforeFree(const CacheEntry *cache);
  // A transfer's checks in upstream's order: the arguments and the local cache first, the link last.
  DetailedStatus CheckTransfer(const TransferArgs &args, const char *operation, std::shared_ptr<CacheEntry> *local) const;
  DetailedStatus FindUsableLink(uint64_t remote_cluster_id, std::shared_ptr<Link> *link) const;
  DetailedStatus ServePull(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload);
  DetailedStatus ServePush(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload);
  // What a transfer leaves for its metrics: the link it used (null when it failed before one was
  // found) and the bytes it moved.
  struct TransferOutcome {
    std::shared_ptr<Link> link;
    uint64_t bytes = 0;
  };
  DetailedStatus PullUnmetered(const TransferArgs &args, TransferOutcome *outcome);
  DetailedStatus PushUnmetered(const TransferArgs &args, TransferOutcome *outcome);
  // The start of an operation for its latency (0 when metrics are off: no clock read), and its
  // one record point, into the link's metrics (when given) and the process totals.
  uint64_t MeterStart() const { return options_.metrics ? MetricsNowNs() : 0; }
  void Meter(Link *link, OpKind kind, const DetailedStatus &status, uint64_t bytes, uint64_t started);
  DetailedStatus ServeRelease(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload);
  DetailedStatus ServePushComplete(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload);
  MemoryKind DeviceMemoryKind() const {
    return options_.device_backend == DeviceBackend::kCuda ? MemoryKind::kCudaDevice : MemoryKind::kCpuDevice;
  }

  uint64_t cluster_id_;
  LlmRole role_;
  bool initialized_ = false;
  EngineOptions options_;
  std::shared_ptr<MemoryPool> device_pool_;
  std::shared_ptr<MemoryPool> host_pool_;
  CacheRegistry registry_;
  // Declared before links_ so that links closed while links_ goes still find them.
  Metrics metrics_;           // process totals
  Metrics unlinked_metrics_;  // operations without a link
  std::atomic<uint64_t> links_up_{0}, links_broken_{0}, links_closed_{0};
  std::unique_ptr<LinkManager> links_;
  CacheTablePublisher table_;
  // Orders table updates against each other: each one re-reads the registry under it, so
  // concurrent register/deallocate of one key leave the table matching the registry.
  std::mutex table_mutex_;
  std::vector<LocalRegion> local_regions_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_ENGINE_DATA_DIST_ENGINE_H_
