// SPDX-License-Identifier: Apache-2.0
#include "engine/data_dist_engine.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>

#include "common/cuda_driver.h"
#include "common/logging.h"
#include "engine/copy_engine.h"
#include "engine/tensor_size.h"
#include "transport/transport.h"

namespace llm_datadist {

namespace {

const std::string *FindOption(const std::map<std::string, std::string> &options, const char *key) {
  auto it = options.find(key);
  return it == options.end() ? nullptr : &it->second;
}

// Our options: the option if given, else the environment variable if set and not empty, else
// `fallback`.
std::string OptionOrEnv(const std::map<std::string, std::string> &options, const char *key, const char *env,
                        const char *fallback) {
  if (const std::string *opt = FindOption(options, key)) return *opt;
  if (const char *value = std::getenv(env); value != nullptr && *value != '\0') return value;
  return fallback;
}

// An on/off option of ours ("0" or "1"; anything else is refused naming the value).
DetailedStatus SwitchOption(const std::map<std::string, std::string> &options, const char *key, const char *env,
                            bool fallback, bool *out) {
  const std::string value = OptionOrEnv(options, key, env, fallback ? "1" : "0");
  LLMDD_CHECK(value == "0" || value == "1", LLM_PARAM_INVALID, key, " \"", value, "\" must be \"0\" or \"1\"");
  *out = value == "1";
  return DetailedStatus::Ok();
}

// Strict decimal parse: the whole string must be digits (with an optional leading '-').
bool ParseInt64(const std::string &text, int64_t *out) {
  if (text.empty()) return false;
  char *end = nullptr;
  errno = 0;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0') return false;
  *out = value;
  return true;
}

std::string ShapeString(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

const char *DeviceBackendName(DeviceBackend backend) {
  return backend == DeviceBackend::kCuda ? "cuda" : "cpu";
}

DetailedStatus ParseEngineOptions(const std::map<std::string, std::string> &options, EngineOptions *out) {
  EngineOptions parsed;
  // Python emits ge.exec.deviceId; upstream C++ requires llm.DeviceId. Either is accepted.
  const std::string *device = FindOption(options, OPTION_DEVICE_ID);
  if (device == nullptr) device = FindOption(options, "ge.exec.deviceId");
  if (device != nullptr) {
    // A multi-device list "0;1" is accepted upstream in name only (one device is used).
    std::string first = device->substr(0, device->find(';'));
    int64_t id = 0;
    LLMDD_CHECK(ParseInt64(first, &id) && id >= 0 && id <= std::numeric_limits<int32_t>::max(),
                LLM_PARAM_INVALID, "device id \"", *device, "\" is not a non-negative int32");
    parsed.device_id = static_cast<int32_t>(id);
  }
  if (const std::string *timeout = FindOption(options, OPTION_SYNC_CACHE_WAIT_TIME)) {
    int64_t ms = 0;
    LLMDD_CHECK(ParseInt64(*timeout, &ms) && ms > 0 && ms <= std::numeric_limits<int32_t>::max(),
                LLM_PARAM_INVALID, OPTION_SYNC_CACHE_WAIT_TIME, " \"", *timeout,
                "\" is not a positive int32 number of milliseconds");
    parsed.sync_kv_timeout_ms = ms;
  }
  if (const std::string *cfg = FindOption(options, OPTION_MEM_POOL_CONFIG); cfg && !cfg->empty()) {
    PoolConfig pool;
    LLMDD_RETURN_IF_ERROR(ParsePoolConfig(*cfg, OPTION_MEM_POOL_CONFIG, &pool));
    parsed.device_pool = pool;
  }
  if (const std::string *cfg = FindOption(options, OPTION_HOST_MEM_POOL_CONFIG); cfg && !cfg->empty()) {
    PoolConfig pool;
    LLMDD_RETURN_IF_ERROR(ParsePoolConfig(*cfg, OPTION_HOST_MEM_POOL_CONFIG, &pool));
    parsed.host_pool = pool;
  }
  // Link options (ours): a shared secret, and a forced transport ("auto" or one the registry
  // lets be forced: then it and tcp alone serve every link, even on one host; transport.h).
  parsed.link_secret = OptionOrEnv(options, "llmdd.LinkSecret", "LLMDD_LINK_SECRET", "");
  LLMDD_RETURN_IF_ERROR(ParseForcedTransport(
      "llmdd.Transport", OptionOrEnv(options, "llmdd.Transport", "LLMDD_TRANSPORT", "auto"), &parsed.forced_transport));
  // Access control (ours): which other uids may map our pools, and whether a secret is a must.
  const std::string uids = OptionOrEnv(options, "llmdd.AllowedUids", "LLMDD_ALLOWED_UIDS", "");
  for (size_t begin = 0; begin < uids.size();) {
    size_t end = uids.find(',', begin);
    if (end == std::string::npos) end = uids.size();
    const std::string item = uids.substr(begin, end - begin);
    int64_t uid = -1;
    LLMDD_CHECK(ParseInt64(item, &uid) && uid >= 0 && uid <= std::numeric_limits<uint32_t>::max(), LLM_PARAM_INVALID,
                "llmdd.AllowedUids \"", uids, "\" is not a comma-separated list of uids (bad item \"", item, "\")");
    parsed.allowed_uids.push_back(static_cast<uint32_t>(uid));
    begin = end + 1;
  }
  LLMDD_RETURN_IF_ERROR(SwitchOption(options, "llmdd.RequireSecret", "LLMDD_REQUIRE_SECRET", false,
                                     &parsed.require_secret));
  // Metrics (ours; on by default): off records nothing, so the bench can measure what they cost.
  LLMDD_RETURN_IF_ERROR(SwitchOption(options, "llmdd.Metrics", "LLMDD_METRICS", true, &parsed.metrics));
  // How long waits on a link poll before they sleep (ours): a small pull's latency against the
  // CPU its waits burn; 0 sleeps at once.
  const std::string spin = OptionOrEnv(options, "llmdd.PollSpinUs", "LLMDD_POLL_SPIN_US", "");
  if (!spin.empty()) {
    int64_t us = -1;
    LLMDD_CHECK(ParseInt64(spin, &us) && us >= 0 && us <= kMaxPollSpinUs, LLM_PARAM_INVALID, "llmdd.PollSpinUs \"",
                spin, "\" is not a number of microseconds in [0, ", kMaxPollSpinUs, "]");
    parsed.poll_spin_us = us;
  }
  const std::string *listen = FindOption(options, OPTION_LISTEN_IP_INFO);
  if (listen == nullptr) listen = FindOption(options, "llm.listenIpInfo");
  if (listen != nullptr) parsed.listen_ip_info = *listen;

  // Which memory Placement.DEVICE means: the option, else LLMDD_DEVICE_BACKEND, else auto.
  const std::string backend = OptionOrEnv(options, OPTION_DEVICE_BACKEND, "LLMDD_DEVICE_BACKEND", "auto");
  LLMDD_CHECK(backend == "auto" || backend == "cuda" || backend == "cpu", LLM_PARAM_INVALID,
              OPTION_DEVICE_BACKEND, " \"", backend, "\" must be \"auto\", \"cuda\" or \"cpu\"");
  if (backend == "cpu") {
    parsed.device_backend = DeviceBackend::kCpu;
    parsed.device_backend_reason = "CPU device selected explicitly";
  } else {
    cuda::CudaInfo info = cuda::Probe();
    const bool usable = info.available && parsed.device_id < info.device_count;
    if (backend == "cuda") {
      LLMDD_CHECK(info.available, LLM_FEATURE_NOT_ENABLED,
                  "the CUDA device backend was requested but CUDA is unavailable: ", info.reason);
      LLMDD_CHECK(usable, LLM_PARAM_INVALID, "device id ", parsed.device_id, " is out of range: ",
                  info.device_count, " CUDA device(s) visible");
    }
    if (usable) {
      parsed.device_backend = DeviceBackend::kCuda;
      parsed.device_backend_reason = detail::Concat("CUDA device ", parsed.device_id, " (",
                                                    info.device_names[parsed.device_id], ")");
    } else {
      parsed.device_backend = DeviceBackend::kCpu;
      parsed.device_backend_reason =
          info.available ? detail::Concat("device id ", parsed.device_id, " is not among the ",
                                          info.device_count, " CUDA device(s); using the CPU device")
                         : detail::Concat("no CUDA (", info.reason, "); using the CPU device");
    }
  }
  *out = std::move(parsed);
  return DetailedStatus::Ok();
}

DataDistEngine::DataDistEngine(uint64_t cluster_id, LlmRole role) : cluster_id_(cluster_id), role_(role) {}

DataDistEngine::~DataDistEngine() { Finalize(); }

DetailedStatus DataDistEngine::Initialize(const std::map<std::string, std::string> &options) {
  if (initialized_) return DetailedStatus::Ok();  // upstream: init is idempotent
  EngineOptions parsed;
  LLMDD_RETURN_IF_ERROR(ParseEngineOptions(options, &parsed));
  std::shared_ptr<MemoryPool> device_pool;
  std::shared_ptr<MemoryPool> host_pool;
  options_ = parsed;
  if (parsed.device_pool) {
    LLMDD_RETURN_IF_ERROR(
        MemoryPool::Create(DeviceMemoryKind(), *parsed.device_pool, parsed.device_id, &device_pool));
  }
  if (parsed.host_pool) {
    LLMDD_RETURN_IF_ERROR(MemoryPool::Create(MemoryKind::kHost, *parsed.host_pool, -1, &host_pool));
  }
  // Regions linked peers may read: memfd pools are passed as descriptors, a CUDA pool as an
  // IPC handle.
  std::vector<LocalRegion> regions;
  if (host_pool) {
    LocalRegion r;
    r.id = static_cast<uint8_t>(RegionId::kHostPool);
    r.kind = RegionKind::kHostPool;
    r.size = host_pool->size();
    r.memfd = host_pool->fd();
    r.base = host_pool->base();
    regions.push_back(r);
  }
  if (device_pool) {
    LocalRegion r;
    r.id = static_cast<uint8_t>(RegionId::kDevicePool);
    r.size = device_pool->size();
    r.base = device_pool->base();
    if (device_pool->kind() == MemoryKind::kCudaDevice) {
      r.kind = RegionKind::kCudaPool;
      std::optional<cuda::ScopedDeviceContext> ctx;
      DetailedStatus entered = cuda::ScopedDeviceContext::Enter(parsed.device_id, &ctx);
      DetailedStatus got = entered.ok() ? cuda::CheckCu(cuda::Driver()->cuIpcGetMemHandle(
                                                             &r.ipc_handle, static_cast<cuda::CUdeviceptr>(
                                                                                reinterpret_cast<uintptr_t>(device_pool->base()))),
                                                         "cuIpcGetMemHandle")
                                        : entered;
      r.has_ipc = got.ok();
      if (!got.ok()) LLMDD_LOG(kWarning, "device pool is not shareable over cuda_ipc (", got.message(), "); peers use tcp");
    } else {
      r.kind = RegionKind::kCpuDevicePool;
      r.memfd = device_pool->fd();
    }
    regions.push_back(r);
  }
  {
    LocalRegion r;
    r.id = static_cast<uint8_t>(RegionId::kCacheTable);
    r.kind = RegionKind::kCacheTable;
    r.size = kCacheTableBytes;
    LLMDD_RETURN_IF_ERROR(table_.Create());
    r.memfd = table_.fd();
    regions.push_back(r);
  }
  // Each transport's process-level part, before any link (UCX: the process's worker where this
  // engine wants it; its links then offer UCX in the handshake). The first that fails fails init.
  const ProcessSetup setup{parsed.forced_transport};
  for (const TransportProvider *provider : TransportProviders()) LLMDD_RETURN_IF_ERROR(provider->Start(setup));
  auto links = std::make_unique<LinkManager>(cluster_id_, this, [this] { return LocalRegions(); },
                                             LinkOptions{parsed.link_secret, parsed.forced_transport, parsed.allowed_uids,
                                                         parsed.require_secret, parsed.device_id, parsed.poll_spin_us});
  if (!parsed.listen_ip_info.empty()) {
    std::string ip;
    uint16_t port = 0;
    LLMDD_RETURN_IF_ERROR(ParseIpPort(parsed.listen_ip_info, &ip, &port));
    LLMDD_CHECK(port != 0, LLM_PARAM_INVALID, "listen ip info \"", parsed.listen_ip_info,
                "\" has port 0; give the port peers link to");
    LLMDD_RETURN_IF_ERROR(links->StartListener(ip, port));
  }
  local_regions_ = std::move(regions);
  links_ = std::move(links);
  device_pool_ = std::move(device_pool);
  host_pool_ = std::move(host_pool);
  initialized_ = true;
  LLMDD_LOG(kInfo, "cluster ", cluster_id_, " initialized; device backend ",
            DeviceBackendName(options_.device_backend), ": ", options_.device_backend_reason);
  return DetailedStatus::Ok();
}

void DataDistEngine::Finalize() {
  if (!initialized_) return;
  links_.reset();  // closes every link and joins its threads before the memory goes
  // Transports drop what refers to the pools (UCX unmaps them) before the pools are freed.
  for (const TransportProvider *provider : TransportProviders()) provider->ForgetRegions(local_regions_);
  local_regions_.clear();
  registry_.Clear();
  table_.Clear();
  device_pool_.reset();
  host_pool_.reset();
  initialized_ = false;
}

DetailedStatus DataDistEngine::CheckInitialized(const char *operation) const {
  LLMDD_CHECK(initialized_, LLM_FAILED, operation, ": llm datadist is not initialized");
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::NewEntry(const CacheDesc &desc, bool is_blocks, bool is_registered,
                                        std::shared_ptr<CacheEntry> *out) {
  LLMDD_CHECK(desc.num_tensors > 0, LLM_PARAM_INVALID, "num_tensors must be > 0, got ", desc.num_tensors);
  int64_t bytes = 0;
  LLMDD_RETURN_IF_ERROR(CalcTensorSize(desc.shape, desc.data_type, &bytes));
  LLMDD_CHECK(bytes > 0 && desc.shape[0] > 0, LLM_PARAM_INVALID, "a cache of shape ",
              ShapeString(desc.shape), " holds 0 bytes");
  LLMDD_CHECK(bytes % desc.shape[0] == 0, LLM_PARAM_INVALID, "tensor bytes ", bytes,
              " do not split evenly into shape[0] = ", desc.shape[0]);
  auto entry = std::make_shared<CacheEntry>();
  entry->desc = desc;
  entry->is_blocks = is_blocks;
  entry->is_registered = is_registered;
  entry->tensor_bytes = static_cast<uint64_t>(bytes);
  entry->stride = static_cast<uint64_t>(bytes / desc.shape[0]);
  if (desc.placement == CachePlacement::kHost) {
    entry->memory_kind = MemoryKind::kHost;
  } else {
    entry->memory_kind = DeviceMemoryKind();
    entry->device_ordinal = options_.device_id;
  }
  *out = std::move(entry);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::Allocate(const CacheDesc &desc, bool is_blocks,
                                        const std::vector<CacheKeySpec> &keys,
                                        const std::optional<BlocksKeySpec> &blocks_key,
                                        std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized(is_blocks ? "allocate_blocks_cache" : "allocate_cache"));
  std::shared_ptr<CacheEntry> entry;
  LLMDD_RETURN_IF_ERROR(NewEntry(desc, is_blocks, false, &entry));
  const bool host = desc.placement == CachePlacement::kHost;
  const std::shared_ptr<MemoryPool> &pool = host ? host_pool_ : device_pool_;
  LLMDD_CHECK(pool != nullptr, LLM_FEATURE_NOT_ENABLED, "no ", host ? "host" : "device",
              " memory pool: set ", host ? "host_mem_pool_cfg (llm.HostMemPoolConfig)" : "mem_pool_cfg (llm.MemPoolConfig)",
              " at init to allocate ", host ? "Placement.HOST" : "Placement.DEVICE", " caches");
  // Keys first, so a bad key costs no allocation.
  LLMDD_RETURN_IF_ERROR(registry_.CheckKeys(keys, static_cast<uint64_t>(desc.shape[0])));
  LLMDD_RETURN_IF_ERROR(registry_.CheckBlocksKey(blocks_key));
  // Not reserve(num_tensors): a caller's 2^32-1 tensors would be a bad_alloc here, before the
  // pool, which owns the answer (LLM_OUT_OF_MEMORY when they do not fit), has been asked.
  entry->allocations.reserve(std::min<uint32_t>(desc.num_tensors, 1024));
  for (uint32_t i = 0; i < desc.num_tensors; ++i) {
    std::shared_ptr<PoolAllocation> allocation;
    DetailedStatus status = pool->Allocate(entry->tensor_bytes, &allocation);
    if (!status.ok()) {
      // Allocations made so far return to the pool with `entry`.
      return status.With("operation", is_blocks ? "allocate_blocks_cache" : "allocate_cache")
          .With("tensor_index", i)
          .With("num_tensors", desc.num_tensors);
    }
    entry->tensor_addrs.push_back(reinterpret_cast<uintptr_t>(allocation->data()));
    entry->allocations.push_back(std::move(allocation));
  }
  entry->cache_id = registry_.NextCacheId();
  LLMDD_RETURN_IF_ERROR(registry_.Add(entry, keys, blocks_key));
  *out = std::move(entry);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::AllocateCache(const CacheDesc &desc, const std::vector<CacheKeySpec> &keys,
                                             std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(Allocate(desc, false, keys, std::nullopt, out));
  PublishPrefixKeys(keys, **out);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::AllocateBlocksCache(const CacheDesc &desc, const std::optional<BlocksKeySpec> &key,
                                                   std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(Allocate(desc, true, {}, key, out));
  if (key) PublishKey(TableKey::Blocks(key->model_id), **out);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::DeallocateCache(int64_t cache_id) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("deallocate_cache"));
  return registry_.Deallocate(cache_id, false);
}

DetailedStatus DataDistEngine::DeallocateBlocksCache(int64_t cache_id) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("deallocate_blocks_cache"));
  const std::shared_ptr<CacheEntry> entry = registry_.Find(cache_id);
  const std::optional<uint64_t> model_id = registry_.BlocksKeyOf(cache_id);
  UnpublishBeforeFree(entry.get());
  const DetailedStatus deallocated = registry_.Deallocate(cache_id, true);
  // Not deallocated after all (not a blocks cache): what it was published under still holds.
  if (model_id && entry) PublishKey(TableKey::Blocks(*model_id), *entry);
  return deallocated;
}

DetailedStatus DataDistEngine::RemoveCacheKey(const CacheKeySpec &key) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("remove_cache_key"));
  if (key.is_prefix()) {
    // Unpublished first: removing the last key may free the cache.
    std::lock_guard<std::mutex> lock(table_mutex_);
    table_.Remove(TableKey::Prefix(key.prefix_id, key.model_id));
  }
  registry_.RemoveKey(key);
  return DetailedStatus::Ok();
}

namespace {
RegisteredMemory RegisteredMemoryOf(const CacheEntry &entry) {
  RegisteredMemory memory;
  memory.cache_id = entry.cache_id;
  memory.kind = entry.memory_kind;
  for (uintptr_t addr : entry.tensor_addrs) memory.ranges.push_back({addr, entry.tensor_bytes});
  return memory;
}
}  // namespace

void DataDistEngine::OnLinkUp(Link &link) {
  // Caches registered before the link was made, announced like later ones.
  const Deadline deadline = DeadlineIn(options_.sync_kv_timeout_ms);
  for (const std::shared_ptr<CacheEntry> &entry : registry_.RegisteredCaches())
    link.OnCacheRegistered(RegisteredMemoryOf(*entry), deadline);
  if (options_.metrics) links_up_.fetch_add(1, std::memory_order_relaxed);
}

void DataDistEngine::OnLinkDown(Link &, bool broken) {
  if (options_.metrics) (broken ? links_broken_ : links_closed_).fetch_add(1, std::memory_order_relaxed);
}

DetailedStatus DataDistEngine::Register(const CacheDesc &desc, bool is_blocks, const std::vector<uintptr_t> &addrs,
                                        const std::vector<CacheKeySpec> &keys,
                                        const std::optional<BlocksKeySpec> &blocks_key,
                                        std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized(is_blocks ? "register_blocks_cache" : "register_cache"));
  std::shared_ptr<CacheEntry> entry;
  LLMDD_RETURN_IF_ERROR(NewEntry(desc, is_blocks, true, &entry));
  LLMDD_CHECK(addrs.size() == desc.num_tensors, LLM_PARAM_INVALID, "got ", addrs.size(),
              " addresses for num_tensors ", desc.num_tensors);
  for (size_t i = 0; i < addrs.size(); ++i)
    LLMDD_CHECK(addrs[i] != 0, LLM_PARAM_INVALID, "addrs[", i, "] is 0");
  LLMDD_RETURN_IF_ERROR(registry_.CheckKeys(keys, static_cast<uint64_t>(desc.shape[0])));
  LLMDD_RETURN_IF_ERROR(registry_.CheckBlocksKey(blocks_key));
  entry->tensor_addrs = addrs;
  entry->cache_id = registry_.NextCacheId();
  LLMDD_RETURN_IF_ERROR(registry_.Add(entry, keys, blocks_key));
  // Transports that must announce memory before a peer reads it (one that maps memory and sends the peer its remote keys) learn of it here.
  if (links_) {
    const RegisteredMemory memory = RegisteredMemoryOf(*entry);
    const Deadline deadline = DeadlineIn(options_.sync_kv_timeout_ms);
    links_->ForEachLink([&](Link &link) { link.OnCacheRegistered(memory, deadline); });
  }
  *out = std::move(entry);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::RegisterCache(const CacheDesc &desc, const std::vector<uintptr_t> &addrs,
                                             const std::vector<CacheKeySpec> &keys,
                                             std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(Register(desc, false, addrs, keys, std::nullopt, out));
  PublishPrefixKeys(keys, **out);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::RegisterBlocksCache(const CacheDesc &desc, const std::vector<uintptr_t> &addrs,
                                                   const std::optional<BlocksKeySpec> &key,
                                                   std::shared_ptr<CacheEntry> *out) {
  LLMDD_RETURN_IF_ERROR(Register(desc, true, addrs, {}, key, out));
  if (key) PublishKey(TableKey::Blocks(key->model_id), **out);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::UnregisterCache(int64_t cache_id) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("unregister_cache"));
  LLMDD_RETURN_IF_ERROR(registry_.Unregister(cache_id));
  {
    // Before returning: the caller may free the memory once unregister returned.
    std::lock_guard<std::mutex> lock(table_mutex_);
    if (!registry_.Find(cache_id)) table_.RemoveCache(cache_id);
  }
  if (links_) links_->ForEachLink([&](Link &link) { link.OnCacheUnregistered(cache_id); });
  return DetailedStatus::Ok();
}

void DataDistEngine::PublishKey(const TableKey &key, const CacheEntry &cache) {
  std::lock_guard<std::mutex> lock(table_mutex_);
  TableEntry e;
  e.key = key;
  if (key.kind == TableKeyKind::kBlocks) {
    if (registry_.FindBlocksKey(key.model_id) != cache.cache_id) return;  // deallocated meanwhile
  } else {
    const std::optional<KeySlot> bound = registry_.FindKey(CacheKeySpec{cluster_id_, kInvalidId, key.model_id, key.prefix_id});
    if (!bound || bound->cache_id != cache.cache_id) return;  // removed meanwhile
    // Pulled as a contiguous slot: what the owner's checks allow for one (ResolveRequest).
    if (cache.is_blocks && !cache.is_registered && !cache.mixed) return;
    e.slot = bound->batch_index;
  }
  e.cache_id = cache.cache_id;
  e.stride = cache.stride;
  e.num_blocks = static_cast<uint64_t>(cache.desc.shape[0]);
  const std::shared_ptr<MemoryPool> &pool = cache.memory_kind == MemoryKind::kHost ? host_pool_ : device_pool_;
  if (!cache.is_registered && pool != nullptr) {
    e.location = TableLocation::kRegion;
    e.region_id = static_cast<uint8_t>(cache.memory_kind == MemoryKind::kHost ? RegionId::kHostPool : RegionId::kDevicePool);
    for (uintptr_t addr : cache.tensor_addrs) e.tensors.push_back(addr - reinterpret_cast<uintptr_t>(pool->base()));
  } else if (IsHostAddressable(cache.memory_kind)) {
    e.location = TableLocation::kRawHost;
    for (uintptr_t addr : cache.tensor_addrs) e.tensors.push_back(addr);
  } else {
    return;  // registered CUDA memory: served two-sided
  }
  table_.Put(std::move(e));
}

void DataDistEngine::PublishPrefixKeys(const std::vector<CacheKeySpec> &keys, const CacheEntry &cache) {
  for (const CacheKeySpec &key : keys)
    if (key.is_prefix()) PublishKey(TableKey::Prefix(key.prefix_id, key.model_id), cache);
}

void DataDistEngine::UnpublishBeforeFree(const CacheEntry *cache) {
  if (cache == nullptr || cache->is_registered) return;
  std::lock_guard<std::mutex> lock(table_mutex_);
  table_.RemoveCache(cache->cache_id);
}

DetailedStatus DataDistEngine::CopyCache(int64_t dst_cache_id, int64_t src_cache_id, uint32_t dst_batch_index,
                                         uint32_t src_batch_index, uint64_t offset, int64_t size) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("copy_cache"));
  std::shared_ptr<CacheEntry> dst = registry_.Find(dst_cache_id);
  std::shared_ptr<CacheEntry> src = registry_.Find(src_cache_id);
  LLMDD_CHECK(dst != nullptr, LLM_KV_CACHE_NOT_EXIST, "dst cache ", dst_cache_id, " does not exist");
  LLMDD_CHECK(src != nullptr, LLM_KV_CACHE_NOT_EXIST, "src cache ", src_cache_id, " does not exist");
  LLMDD_CHECK(!dst->is_blocks && !src->is_blocks, LLM_PARAM_INVALID, "copy_cache needs contiguous caches, but ",
              dst->is_blocks ? "dst" : "src", " cache ", dst->is_blocks ? dst_cache_id : src_cache_id,
              " is a blocks cache (use copy_blocks)");
  LLMDD_CHECK(dst->desc.num_tensors == src->desc.num_tensors, LLM_PARAM_INVALID, "num_tensors differ: dst ",
              dst->desc.num_tensors, ", src ", src->desc.num_tensors);
  LLMDD_CHECK(dst->stride == src->stride, LLM_PARAM_INVALID, "batch slot bytes differ: dst ", dst->stride,
              ", src ", src->stride);
  LLMDD_CHECK(dst_batch_index < static_cast<uint64_t>(dst->desc.shape[0]), LLM_PARAM_INVALID,
              "dst_batch_index ", dst_batch_index, " is out of range [0, ", dst->desc.shape[0], ")");
  LLMDD_CHECK(src_batch_index < static_cast<uint64_t>(src->desc.shape[0]), LLM_PARAM_INVALID,
              "src_batch_index ", src_batch_index, " is out of range [0, ", src->desc.shape[0], ")");
  LLMDD_CHECK(offset < src->stride, LLM_PARAM_INVALID, "offset ", offset, " is not inside a batch slot of ",
              src->stride, " bytes");
  LLMDD_CHECK(size == -1 || size > 0, LLM_PARAM_INVALID, "size must be -1 or > 0, got ", size);
  const uint64_t bytes = size == -1 ? src->stride - offset : static_cast<uint64_t>(size);
  LLMDD_CHECK(offset + bytes <= src->stride, LLM_PARAM_INVALID, "offset ", offset, " + size ", bytes,
              " is larger than a batch slot of ", src->stride, " bytes");
  std::vector<CopyRegion> regions;
  for (uint32_t t = 0; t < src->desc.num_tensors; ++t) {
    regions.push_back({reinterpret_cast<uint8_t *>(dst->tensor_addrs[t]) + dst_batch_index * dst->stride + offset,
                       reinterpret_cast<const uint8_t *>(src->tensor_addrs[t]) + src_batch_index * src->stride + offset,
                       bytes});
  }
  DetailedStatus status = CopyRegions(regions, dst->memory_kind, src->memory_kind);
  if (!status.ok()) status.With("operation", "copy_cache");
  return status;
}

DetailedStatus DataDistEngine::CopyBlocks(int64_t cache_id,
                                          const std::vector<std::pair<uint64_t, std::vector<uint64_t>>> &src_to_dsts) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("copy_blocks"));
  std::shared_ptr<CacheEntry> cache = registry_.Find(cache_id);
  LLMDD_CHECK(cache != nullptr, LLM_KV_CACHE_NOT_EXIST, "cache ", cache_id, " does not exist");
  LLMDD_CHECK(cache->is_blocks, LLM_PARAM_INVALID, "copy_blocks needs a blocks cache, but cache ", cache_id,
              " is contiguous (use copy_cache)");
  const uint64_t num_blocks = static_cast<uint64_t>(cache->desc.shape[0]);
  std::vector<CopyRegion> regions;
  for (const auto &entry : src_to_dsts) {
    LLMDD_CHECK(entry.first < num_blocks, LLM_PARAM_INVALID, "src block index ", entry.first,
                " is out of range [0, ", num_blocks, ")");
    for (uint64_t dst : entry.second) {
      LLMDD_CHECK(dst < num_blocks, LLM_PARAM_INVALID, "dst block index ", dst, " is out of range [0, ",
                  num_blocks, ")");
      if (dst == entry.first) continue;
      for (uint32_t t = 0; t < cache->desc.num_tensors; ++t) {
        uint8_t *base = reinterpret_cast<uint8_t *>(cache->tensor_addrs[t]);
        regions.push_back({base + dst * cache->stride, base + entry.first * cache->stride, cache->stride});
      }
    }
  }
  DetailedStatus status = CopyRegions(regions, cache->memory_kind, cache->memory_kind);
  if (!status.ok()) status.With("operation", "copy_blocks");
  return status;
}

DetailedStatus DataDistEngine::CopyBlocksBetween(int64_t src_cache_id, int64_t dst_cache_id,
                                                 const std::vector<uint64_t> &src_blocks,
                                                 const std::vector<std::vector<uint64_t>> &dst_blocks_list) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("CopyKvBlocks"));
  std::shared_ptr<CacheEntry> src = registry_.Find(src_cache_id);
  std::shared_ptr<CacheEntry> dst = registry_.Find(dst_cache_id);
  LLMDD_CHECK(src != nullptr, LLM_KV_CACHE_NOT_EXIST, "src cache ", src_cache_id, " does not exist");
  LLMDD_CHECK(dst != nullptr, LLM_KV_CACHE_NOT_EXIST, "dst cache ", dst_cache_id, " does not exist");
  LLMDD_CHECK(!src_blocks.empty() && !dst_blocks_list.empty(), LLM_PARAM_INVALID,
              "src_blocks and dst_blocks_list must not be empty");
  LLMDD_CHECK(src->desc.num_tensors == dst->desc.num_tensors, LLM_PARAM_INVALID, "num_tensors differ: src ",
              src->desc.num_tensors, ", dst ", dst->desc.num_tensors);
  LLMDD_CHECK(src->stride == dst->stride, LLM_PARAM_INVALID, "block bytes differ: src ", src->stride, ", dst ",
              dst->stride);
  const uint64_t src_blocks_n = static_cast<uint64_t>(src->desc.shape[0]);
  const uint64_t dst_blocks_n = static_cast<uint64_t>(dst->desc.shape[0]);
  std::vector<CopyRegion> regions;
  for (size_t j = 0; j < dst_blocks_list.size(); ++j) {
    const auto &dst_blocks = dst_blocks_list[j];
    LLMDD_CHECK(dst_blocks.size() == src_blocks.size(), LLM_PARAM_INVALID, "dst_blocks_list[", j, "] has ",
                dst_blocks.size(), " blocks, src_blocks has ", src_blocks.size());
    for (size_t i = 0; i < src_blocks.size(); ++i) {
      LLMDD_CHECK(src_blocks[i] < src_blocks_n, LLM_PARAM_INVALID, "src block index ", src_blocks[i],
                  " is out of range [0, ", src_blocks_n, ")");
      LLMDD_CHECK(dst_blocks[i] < dst_blocks_n, LLM_PARAM_INVALID, "dst block index ", dst_blocks[i],
                  " is out of range [0, ", dst_blocks_n, ")");
      for (uint32_t t = 0; t < src->desc.num_tensors; ++t) {
        regions.push_back({reinterpret_cast<uint8_t *>(dst->tensor_addrs[t]) + dst_blocks[i] * dst->stride,
                           reinterpret_cast<const uint8_t *>(src->tensor_addrs[t]) + src_blocks[i] * src->stride,
                           src->stride});
      }
    }
  }
  return CopyRegions(regions, dst->memory_kind, src->memory_kind);
}

DetailedStatus DataDistEngine::ResolveRef(const CacheRef &ref, const char *which,
                                          std::shared_ptr<CacheEntry> *out) const {
  if (ref.cache_id >= 0) {
    std::shared_ptr<CacheEntry> entry = registry_.Find(ref.cache_id);
    LLMDD_CHECK(entry != nullptr, LLM_KV_CACHE_NOT_EXIST, which, " cache ", ref.cache_id, " does not exist");
    *out = std::move(entry);
    return DetailedStatus::Ok();
  }
  // Caller-described memory (Cache.create_cpu_cache): upstream allows host memory only.
  LLMDD_CHECK(ref.desc.placement == CachePlacement::kHost, LLM_PARAM_INVALID, which,
              " cache without a cache id must be a host cache (Cache.create_cpu_cache)");
  auto entry = std::make_shared<CacheEntry>();
  int64_t bytes = 0;
  LLMDD_RETURN_IF_ERROR(CalcTensorSize(ref.desc.shape, ref.desc.data_type, &bytes));
  LLMDD_CHECK(bytes > 0 && ref.desc.shape[0] > 0, LLM_PARAM_INVALID, which, " cache holds 0 bytes");
  LLMDD_CHECK(ref.tensor_addrs.size() == ref.desc.num_tensors, LLM_PARAM_INVALID, which, " cache has ",
              ref.tensor_addrs.size(), " addresses for num_tensors ", ref.desc.num_tensors);
  for (size_t i = 0; i < ref.tensor_addrs.size(); ++i)
    LLMDD_CHECK(ref.tensor_addrs[i] != 0, LLM_PARAM_INVALID, which, " cache address ", i, " is 0");
  entry->desc = ref.desc;
  entry->is_blocks = ref.is_blocks;
  entry->is_registered = true;
  entry->memory_kind = MemoryKind::kHost;
  entry->tensor_bytes = static_cast<uint64_t>(bytes);
  entry->stride = static_cast<uint64_t>(bytes / ref.desc.shape[0]);
  entry->tensor_addrs = ref.tensor_addrs;
  *out = std::move(entry);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::SwapBlocks(const CacheRef &src_ref, const CacheRef &dst_ref,
                                          const std::vector<std::pair<uint64_t, uint64_t>> &src_to_dst) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("swap_blocks"));
  std::shared_ptr<CacheEntry> src;
  std::shared_ptr<CacheEntry> dst;
  LLMDD_RETURN_IF_ERROR(ResolveRef(src_ref, "src", &src));
  LLMDD_RETURN_IF_ERROR(ResolveRef(dst_ref, "dst", &dst));
  const bool src_host = src->desc.placement == CachePlacement::kHost;
  const bool dst_host = dst->desc.placement == CachePlacement::kHost;
  LLMDD_CHECK(src_host != dst_host, LLM_PARAM_INVALID,
              "swap_blocks moves blocks between host and device: exactly one cache must be Placement.HOST, "
              "got src ", src_host ? "HOST" : "DEVICE", " and dst ", dst_host ? "HOST" : "DEVICE");
  LLMDD_CHECK(src->is_blocks && dst->is_blocks, LLM_PARAM_INVALID, "swap_blocks needs blocks caches, but ",
              src->is_blocks ? "dst" : "src", " is contiguous");
  LLMDD_CHECK(src->desc.num_tensors == dst->desc.num_tensors, LLM_PARAM_INVALID, "num_tensors differ: src ",
              src->desc.num_tensors, ", dst ", dst->desc.num_tensors);
  LLMDD_CHECK(src->stride == dst->stride, LLM_PARAM_INVALID, "block bytes differ: src ", src->stride,
              ", dst ", dst->stride);
  const uint64_t src_n = static_cast<uint64_t>(src->desc.shape[0]);
  const uint64_t dst_n = static_cast<uint64_t>(dst->desc.shape[0]);
  std::vector<CopyRegion> regions;
  regions.reserve(src_to_dst.size() * src->desc.num_tensors);
  for (const auto &pair : src_to_dst) {
    LLMDD_CHECK(pair.first < src_n, LLM_PARAM_INVALID, "src block index ", pair.first, " is out of range [0, ",
                src_n, ")");
    LLMDD_CHECK(pair.second < dst_n, LLM_PARAM_INVALID, "dst block index ", pair.second,
                " is out of range [0, ", dst_n, ")");
  }
  for (uint32_t t = 0; t < src->desc.num_tensors; ++t) {
    for (const auto &pair : src_to_dst) {
      regions.push_back({reinterpret_cast<uint8_t *>(dst->tensor_addrs[t]) + pair.second * dst->stride,
                         reinterpret_cast<const uint8_t *>(src->tensor_addrs[t]) + pair.first * src->stride,
                         src->stride});
    }
  }
  DetailedStatus status = CopyRegions(regions, dst->memory_kind, src->memory_kind);
  if (!status.ok()) status.With("operation", "swap_blocks");
  return status;
}

DetailedStatus DataDistEngine::PinTensor(int64_t cache_id, uint32_t tensor_index, TensorPin *out) const {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("tensor view"));
  std::shared_ptr<CacheEntry> entry = registry_.Find(cache_id);
  LLMDD_CHECK(entry != nullptr, LLM_KV_CACHE_NOT_EXIST, "cache ", cache_id, " does not exist");
  LLMDD_CHECK(tensor_index < entry->desc.num_tensors, LLM_PARAM_INVALID, "tensor_index ", tensor_index,
              " is out of range [0, ", entry->desc.num_tensors, ")");
  out->data = reinterpret_cast<void *>(entry->tensor_addrs[tensor_index]);
  out->bytes = entry->tensor_bytes;
  out->memory_kind = entry->memory_kind;
  out->device_ordinal = entry->device_ordinal;
  out->entry = std::move(entry);
  return DetailedStatus::Ok();
}

std::optional<PoolStats> DataDistEngine::GetPoolStats(CachePlacement placement) const {
  const std::shared_ptr<MemoryPool> &pool = placement == CachePlacement::kHost ? host_pool_ : device_pool_;
  if (!pool) return std::nullopt;
  return pool->Stats();
}

}  // namespace llm_datadist
