// SPDX-License-Identifier: Apache-2.0
// The upstream-style facade over DataDistEngine.
#include "llm_datadist/llm_datadist.h"

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
  impl_->engine.set_role(role);
  return LLM_SUCCESS;
}

namespace {
Status NotYet(const char *operation) {
  return Report(DetailedStatus(LLM_FEATURE_NOT_ENABLED,
                               "links and transfers arrive with the transfer layer; this build has local "
                               "cache operations only"),
                operation);
}
}  // namespace

Status LlmDataDist::LinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                                    int32_t timeout_in_millis) {
  if (!impl_->engine.initialized()) return Report(DetailedStatus(LLM_FAILED, "not initialized"), "LinkLlmClusters");
  rets.assign(clusters.size(), LLM_FEATURE_NOT_ENABLED);
  return NotYet("LinkLlmClusters");
}

Status LlmDataDist::UnlinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                                      int32_t timeout_in_millis, bool force_flag) {
  if (!impl_->engine.initialized()) return Report(DetailedStatus(LLM_FAILED, "not initialized"), "UnlinkLlmClusters");
  rets.assign(clusters.size(), LLM_FEATURE_NOT_ENABLED);
  return NotYet("UnlinkLlmClusters");
}

Status LlmDataDist::PullKvCache(const CacheIndex &, const Cache &, uint32_t, int64_t, const KvCacheExtParam &) {
  return NotYet("PullKvCache");
}

Status LlmDataDist::PullKvBlocks(const CacheIndex &, const Cache &, const std::vector<uint64_t> &,
                                 const std::vector<uint64_t> &, const KvCacheExtParam &) {
  return NotYet("PullKvBlocks");
}

Status LlmDataDist::PushKvCache(const Cache &, const CacheIndex &, uint32_t, int64_t, const KvCacheExtParam &) {
  return NotYet("PushKvCache");
}

Status LlmDataDist::PushKvBlocks(const Cache &, const CacheIndex &, const std::vector<uint64_t> &,
                                 const std::vector<uint64_t> &, const KvCacheExtParam &) {
  return NotYet("PushKvBlocks");
}

Status LlmDataDist::AllocateCache(const CacheDesc &cache_desc, Cache &cache) {
  std::shared_ptr<CacheEntry> entry;
  DetailedStatus status = impl_->engine.AllocateCache(cache_desc, {}, &entry);
  if (status.code() == LLM_OUT_OF_MEMORY && cache_desc.placement == CachePlacement::kDevice) {
    // Upstream C++ reports a full device pool as LLM_DEVICE_OUT_OF_MEMORY.
    status = DetailedStatus(LLM_DEVICE_OUT_OF_MEMORY, status.message());
  }
  if (!status.ok()) return Report(status, "AllocateCache");
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
  if (code == LLM_SUCCESS) cache_id = entry->cache_id;
  return code;
}

Status LlmDataDist::UnregisterKvCache(int64_t cache_id) {
  return Report(impl_->engine.UnregisterCache(cache_id), "UnregisterKvCache");
}

}  // namespace llm_datadist
