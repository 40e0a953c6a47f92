// SPDX-License-Identifier: Apache-2.0
// The upstream-style facade over DataDistEngine.
#include "llm_datadist/llm_datadist.h"

#include <arpa/inet.h>

#include <mutex>
#include <string>

#include "common/logging.h"
#include "engine/data_dist_engine.h"

namespace llm_datadist {

namespace {
thread_local std::string t_last_error;

// Records the message for LastErrorMessage and logs it, then returns the bare number.
Status Report(const DetailedStatus &status, const char *operation) {
  if (status.ok()) return LLM_SUCCESS;
  t_last_error = std::string(operation) + ": " + status.ToString();
  LLMDD_LOG(kWarning, t_last_error);
  return status.code();
}

// Upstream pushes only from device caches ("Only support push to device cache"); ours also reads
// host memory. Code that relies on that will not run on upstream, so say so once per process.
void WarnOnceIfHostPush(const Cache &src_cache, const char *operation) {
  static std::once_flag warned;
  if (src_cache.cache_desc.placement != CachePlacement::kHost) return;
  std::call_once(warned, [operation] {
    LLMDD_LOG(kWarning, operation, " from a host cache: accepted here, but upstream returns LLM_PARAM_INVALID "
              "(\"Only support push to device cache\")");
  });
}

std::map<std::string, std::string> ToStringMap(const std::map<AscendString, AscendString> &options) {
  std::map<std::string, std::string> out;
  for (const auto &kv : options) out[kv.first.str()] = kv.second.str();
  return out;
}
}  // namespace

class LlmDataDist::LlmDataDistImpl {
 public:
  LlmDataDistImpl(uint64_t cluster_id, LlmRole role) : engine(cluster_id, role) {}
  DataDistEngine engine;
};

LlmDataDist::LlmDataDist(uint64_t cluster_id, LlmRole role)
    : impl_(std::make_unique<LlmDataDistImpl>(cluster_id, role)) {}

LlmDataDist::~LlmDataDist() = default;

const char *LlmDataDist::LastErrorMessage() { return t_last_error.c_str(); }

Status LlmDataDist::Initialize(const std::map<AscendString, AscendString> &options) {
  const LlmRole role = impl_->engine.role();
  if (role != LlmRole::kPrompt && role != LlmRole::kDecoder && role != LlmRole::kMix)
    return Report(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("role ", static_cast<int>(role), " is invalid")),
                  "Initialize");
  auto opts = ToStringMap(options);
  auto device = opts.find(OPTION_DEVICE_ID);
  if (device == opts.end() || device->second.empty())
    return Report(DetailedStatus(LLM_PARAM_INVALID, "option llm.DeviceId is required"), "Initialize");
  return Report(impl_->engine.Initialize(opts), "Initialize");
}

void LlmDataDist::Finalize() { impl_->engine.Finalize(); }

Status LlmDataDist::SetRole(LlmRole role, const std::map<AscendString, AscendString> &options) {
  if (!impl_->engine.initialized()) return Report(DetailedStatus(LLM_FAILED, "not initialized"), "SetRole");
  if (role != LlmRole::kPrompt && role != LlmRole::kDecoder && role != LlmRole::kMix)
    return Report(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("role ", static_cast<int>(role), " is invalid")),
                  "SetRole");
  auto listen = options.find(AscendString(OPTION_LISTEN_IP_INFO));
  return Report(impl_->engine.SwitchRole(role, listen == options.end() ? "" : listen->second.str()), "SetRole");
}

namespace {
bool IsIpAddress(const std::string &ip) {
  in6_addr any{};
  return inet_pton(AF_INET, ip.c_str(), &any) == 1 || inet_pton(AF_INET6, ip.c_str(), &any) == 1;
}

// Upstream C++ link calls (llm_datadist_impl.cc): checks on the whole call in its order (timeout,
// every ip string of every cluster, a non-empty list), then one status per cluster.
Status CheckLinkCall(bool initialized, const std::vector<ClusterInfo> &clusters, int32_t timeout_in_millis,
                     const char *operation) {
  if (!initialized) return Report(DetailedStatus(LLM_FAILED, "not initialized"), operation);
  if (timeout_in_millis <= 0)
    return Report(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("timeout ", timeout_in_millis, " must be > 0")), operation);
  for (size_t i = 0; i < clusters.size(); ++i)
    for (const auto *infos : {&clusters[i].local_ip_infos, &clusters[i].remote_ip_infos})
      for (const IpInfo &info : *infos)
        if (!IsIpAddress(info.ip.str()))
          return Report(DetailedStatus(LLM_PARAM_INVALID, detail::Concat("clusters[", i, "] has ip \"", info.ip.str(),
                                                                         "\", which is not an IP address")),
                        operation);
  if (clusters.empty()) return Report(DetailedStatus(LLM_PARAM_INVALID, "clusters must not be empty"), operation);
  return LLM_SUCCESS;
}

Status Collect(const std::vector<DetailedStatus> &results, std::vector<Status> &rets, const char *operation) {
  Status overall = LLM_SUCCESS;
  rets.clear();
  for (const DetailedStatus &r : results) {
    rets.push_back(r.code());
    if (!r.ok()) overall = Report(r, operation);
  }
  return overall;
}
}  // namespace

Status LlmDataDist::LinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                                    int32_t timeout_in_millis) {
  Status checked = CheckLinkCall(impl_->engine.initialized(), clusters, timeout_in_millis, "LinkLlmClusters");
  if (checked != LLM_SUCCESS) return checked;
  std::vector<LinkTarget> targets;
  std::vector<DetailedStatus> early(clusters.size());
  for (size_t i = 0; i < clusters.size(); ++i) {
    if (clusters[i].remote_ip_infos.size() != 1 || clusters[i].remote_ip_infos[0].port == 0) {
      early[i] = DetailedStatus(LLM_PARAM_INVALID, "each cluster needs exactly one remote ip info with a port");
      continue;
    }
    targets.push_back({clusters[i].remote_cluster_id, clusters[i].remote_ip_infos[0].ip.str(),
                       clusters[i].remote_ip_infos[0].port});
  }
  std::vector<DetailedStatus> linked = impl_->engine.LinkClusters(targets, timeout_in_millis);
  size_t next = 0;
  for (size_t i = 0; i < clusters.size(); ++i)
    if (early[i].ok()) early[i] = linked[next++];
  return Collect(early, rets, "LinkLlmClusters");
}

Status LlmDataDist::UnlinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                                      int32_t timeout_in_millis, bool force_flag) {
  Status checked = CheckLinkCall(impl_->engine.initialized(), clusters, timeout_in_millis, "UnlinkLlmClusters");
  if (checked != LLM_SUCCESS) return checked;
  std::vector<uint64_t> ids;
  for (const ClusterInfo &c : clusters) ids.push_back(c.remote_cluster_id);
  return Collect(impl_->engine.UnlinkClusters(ids, timeout_in_millis, force_flag), rets, "UnlinkLlmClusters");
}

namespace {
// Upstream C++ layer ranges are inclusive [first, second], -1 meaning none given; the engine
// takes [begin, end) and resolves it against the cache (LayerSelection). As upstream
// (llm_datadist_impl.cc): a pull uses the ranges only when both are given; a push needs both
// of the same size, or a src range of -1, which pushes every layer.
DetailedStatus ApplyExtParam(const KvCacheExtParam &ext, bool push, TransferArgs *args) {
  for (const auto &[name, r] : {std::pair{"src_layer_range", ext.src_layer_range},
                                std::pair{"dst_layer_range", ext.dst_layer_range}})
    LLMDD_CHECK(r.first >= -1 && r.second >= -1 && r.first <= r.second, LLM_PARAM_INVALID, name, " (", r.first, ", ",
                r.second, ") is not a valid inclusive range: layers need >= -1 and first <= second");
  if (push)
    LLMDD_CHECK(ext.src_layer_range.second - ext.src_layer_range.first ==
                    ext.dst_layer_range.second - ext.dst_layer_range.first,
                LLM_PARAM_INVALID, "src_layer_range (", ext.src_layer_range.first, ", ", ext.src_layer_range.second,
                ") and dst_layer_range (", ext.dst_layer_range.first, ", ", ext.dst_layer_range.second,
                ") differ in size");
  LayerSelection &layers = args->layers;
  layers.tensor_num_per_layer = ext.tensor_num_per_layer;
  const bool use_ranges = push ? ext.src_layer_range.first >= 0
                               : ext.src_layer_range.first >= 0 && ext.dst_layer_range.first >= 0;
  if (!use_ranges) return DetailedStatus::Ok();
  // For a pull the source is remote; for a push it is local.
  const auto &local = push ? ext.src_layer_range : ext.dst_layer_range;
  const auto &remote = push ? ext.dst_layer_range : ext.src_layer_range;
  layers.local_begin = local.first;
  layers.local_end = int64_t{local.second} + 1;
  layers.remote_begin = remote.first;
  layers.remote_end = int64_t{remote.second} + 1;
  return DetailedStatus::Ok();
}
}  // namespace

Status LlmDataDist::PullKvCache(const CacheIndex &src_cache_index, const Cache &dst_cache, uint32_t batch_index,
                                int64_t size, const KvCacheExtParam &ext_param) {
  TransferArgs args;
  args.remote_cluster_id = src_cache_index.cluster_id;
  args.key_kind = RemoteKeyKind::kCacheIdAndIndex;
  args.remote_cache_id = src_cache_index.cache_id;
  args.remote_batch_index = src_cache_index.batch_index;
  args.local_cache_id = dst_cache.cache_id;
  args.local_batch_index = batch_index;
  args.size = size;
  DetailedStatus ext = ApplyExtParam(ext_param, false, &args);
  if (!ext.ok()) return Report(ext, "PullKvCache");
  return Report(impl_->engine.Pull(args), "PullKvCache");
}

Status LlmDataDist::PullKvBlocks(const CacheIndex &src_cache_index, const Cache &dst_cache,
                                 const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                                 const KvCacheExtParam &ext_param) {
  if (src_cache_index.batch_index != 0)
    return Report(DetailedStatus(LLM_PARAM_INVALID, "src_cache_index.batch_index must be 0"), "PullKvBlocks");
  if (src_blocks.empty() || src_blocks.size() != dst_blocks.size())
    return Report(DetailedStatus(LLM_PARAM_INVALID, "src_blocks must be non-empty and as long as dst_blocks"),
                  "PullKvBlocks");
  // Upstream addresses the remote blocks cache by cache id.
  TransferArgs args;
  args.remote_cluster_id = src_cache_index.cluster_id;
  args.key_kind = RemoteKeyKind::kCacheIdAndIndex;
  args.remote_cache_id = src_cache_index.cache_id;
  args.local_cache_id = dst_cache.cache_id;
  args.blocks_api = true;
  args.remote_blocks = src_blocks;
  args.local_blocks = dst_blocks;
  DetailedStatus ext = ApplyExtParam(ext_param, false, &args);
  if (!ext.ok()) return Report(ext, "PullKvBlocks");
  return Report(impl_->engine.Pull(args), "PullKvBlocks");
}

Status LlmDataDist::PushKvCache(const Cache &src_cache, const CacheIndex &dst_cache_index, uint32_t src_batch_index,
                                int64_t size, const KvCacheExtParam &ext_param) {
  if (size != -1) return Report(DetailedStatus(LLM_PARAM_INVALID, "PushKvCache size must be -1"), "PushKvCache");
  WarnOnceIfHostPush(src_cache, "PushKvCache");
  TransferArgs args;
  args.remote_cluster_id = dst_cache_index.cluster_id;
  args.key_kind = RemoteKeyKind::kCacheIdAndIndex;
  args.remote_cache_id = dst_cache_index.cache_id;
  args.remote_batch_index = dst_cache_index.batch_index;
  args.local_cache_id = src_cache.cache_id;
  args.local_batch_index = src_batch_index;
  DetailedStatus ext = ApplyExtParam(ext_param, true, &args);
  if (!ext.ok()) return Report(ext, "PushKvCache");
  return Report(impl_->engine.Push(args), "PushKvCache");
}

Status LlmDataDist::PushKvBlocks(const Cache &src_cache, const CacheIndex &dst_cache_index,
                                 const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                                 const KvCacheExtParam &ext_param) {
  if (dst_cache_index.batch_index != 0)
    return Report(DetailedStatus(LLM_PARAM_INVALID, "dst_cache_index.batch_index must be 0"), "PushKvBlocks");
  WarnOnceIfHostPush(src_cache, "PushKvBlocks");
  TransferArgs args;
  args.remote_cluster_id = dst_cache_index.cluster_id;
  args.key_kind = RemoteKeyKind::kCacheIdAndIndex;
  args.remote_cache_id = dst_cache_index.cache_id;
  args.local_cache_id = src_cache.cache_id;
  args.blocks_api = true;
  args.local_blocks = src_blocks;
  args.remote_blocks = dst_blocks;
  DetailedStatus ext = ApplyExtParam(ext_param, true, &args);
  if (!ext.ok()) return Report(ext, "PushKvBlocks");
  return Report(impl_->engine.Push(args), "PushKvBlocks");
}

Status LlmDataDist::AllocateCache(const CacheDesc &cache_desc, Cache &cache) {
  std::shared_ptr<CacheEntry> entry;
  DetailedStatus status = impl_->engine.AllocateCache(cache_desc, {}, &entry);
  if (status.code() == LLM_OUT_OF_MEMORY && cache_desc.placement == CachePlacement::kDevice) {
    // Upstream C++ reports a full device pool as LLM_DEVICE_OUT_OF_MEMORY.
    status = DetailedStatus(LLM_DEVICE_OUT_OF_MEMORY, status.message());
  }
  if (!status.ok()) return Report(status, "AllocateCache");
  entry->mixed = true;
  cache.cache_id = entry->cache_id;
  cache.tensor_addrs = entry->tensor_addrs;
  cache.cache_desc = cache_desc;
  return LLM_SUCCESS;
}

Status LlmDataDist::DeallocateCache(int64_t cache_id) {
  std::shared_ptr<CacheEntry> entry = impl_->engine.FindCache(cache_id);
  if (entry != nullptr && entry->is_blocks) return Report(impl_->engine.DeallocateBlocksCache(cache_id), "DeallocateCache");
  return Report(impl_->engine.DeallocateCache(cache_id), "DeallocateCache");
}

Status LlmDataDist::CopyKvCache(const Cache &src_cache, const Cache &dst_cache, uint32_t src_batch_index,
                                uint32_t dst_batch_index, uint64_t offset, int64_t size) {
  return Report(impl_->engine.CopyCache(dst_cache.cache_id, src_cache.cache_id, dst_batch_index, src_batch_index,
                                        offset, size),
                "CopyKvCache");
}

Status LlmDataDist::CopyKvBlocks(const Cache &src_cache, const Cache &dst_cache, const std::vector<uint64_t> &src_blocks,
                                 const std::vector<std::vector<uint64_t>> &dst_blocks_list) {
  return Report(impl_->engine.CopyBlocksBetween(src_cache.cache_id, dst_cache.cache_id, src_blocks, dst_blocks_list),
                "CopyKvBlocks");
}

Status LlmDataDist::RegisterKvCache(const CacheDesc &cache_desc, const std::vector<uint64_t> &addrs,
                                    const RegisterCfg &, int64_t &cache_id) {
  std::vector<uintptr_t> pointers(addrs.begin(), addrs.end());
  if (addrs.empty()) return Report(DetailedStatus(LLM_PARAM_INVALID, "addrs must not be empty"), "RegisterKvCache");
  std::shared_ptr<CacheEntry> entry;
  // Upstream registers "MIX" memory usable both as a contiguous and a blocks cache; it is
  // recorded as a contiguous cache here (shape[0] slots), which CopyKvBlocks also accepts.
  Status code = Report(impl_->engine.RegisterCache(cache_desc, pointers, {}, &entry), "RegisterKvCache");
  if (code == LLM_SUCCESS) {
    entry->mixed = true;
    cache_id = entry->cache_id;
  }
  return code;
}

Status LlmDataDist::UnregisterKvCache(int64_t cache_id) {
  return Report(impl_->engine.UnregisterCache(cache_id), "UnregisterKvCache");
}

}  // namespace llm_datadist
