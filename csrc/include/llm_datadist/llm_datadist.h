// SPDX-License-Identifier: Apache-2.0
// The upstream-compatible C++ API: class llm_datadist::LlmDataDist with upstream LLM-DataDist's
// methods, argument order, defaults and Status numbers, so C++ code written for Ascend builds
// against this header unchanged, also where it names types through CANN's `ge` namespace
// (ge_types.h: ge::Status, ge::SUCCESS, ge::AscendString, ge::DataType). Link with
// libllm_datadist.so (`llm-datadist doctor` prints where it and this header are installed).
//
// Where upstream's current implementation returns LLM_FEATURE_NOT_ENABLED (AllocateCache,
// DeallocateCache, CopyKvCache, CopyKvBlocks), this one implements the legacy semantics, which
// is what those functions' documentation describes.
//
// Thread-safety: Initialize/Finalize must not run concurrently with other calls; the rest may.
#ifndef LLM_DATADIST_LLM_DATADIST_H_
#define LLM_DATADIST_LLM_DATADIST_H_

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "llm_datadist/status.h"
#include "llm_datadist/types.h"

namespace llm_datadist {

class LlmDataDist {
 public:
  /// @param cluster_id  this instance's cluster id, unique among instances that link.
  /// @param role        a label in CacheManager mode (kPrompt, kDecoder, kMix).
  LlmDataDist(uint64_t cluster_id, LlmRole role);
  ~LlmDataDist();
  LlmDataDist(const LlmDataDist &) = delete;
  LlmDataDist &operator=(const LlmDataDist &) = delete;

  /// Requires OPTION_DEVICE_ID; pools from llm.MemPoolConfig / llm.HostMemPoolConfig.
  /// Returns LLM_SUCCESS when already initialized.
  Status Initialize(const std::map<AscendString, AscendString> &options);
  void Finalize();
  /// LLM_FAILED before Initialize; LLM_EXIST_LINK while links exist.
  Status SetRole(LlmRole role, const std::map<AscendString, AscendString> &options = {});

  /// One status per cluster in `rets`; LLM_SUCCESS when every cluster succeeded, else a failing one's code.
  Status LinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                         int32_t timeout_in_millis = 1000);
  Status UnlinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                           int32_t timeout_in_millis = 1000, bool force_flag = false);
  Status PullKvCache(const CacheIndex &src_cache_index, const Cache &dst_cache, uint32_t batch_index = 0U,
                     int64_t size = -1, const KvCacheExtParam &ext_param = {});
  Status PullKvBlocks(const CacheIndex &src_cache_index, const Cache &dst_cache,
                      const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                      const KvCacheExtParam &ext_param = {});
  Status PushKvCache(const Cache &src_cache, const CacheIndex &dst_cache_index, uint32_t src_batch_index = 0U,
                     int64_t size = -1, const KvCacheExtParam &ext_param = {});
  Status PushKvBlocks(const Cache &src_cache, const CacheIndex &dst_cache_index,
                      const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                      const KvCacheExtParam &ext_param = {});

  /// Allocates a cache from the pool of cache_desc.placement; fills cache.cache_id,
  /// cache.tensor_addrs and cache.cache_desc. LLM_DEVICE_OUT_OF_MEMORY (device) or
  /// LLM_OUT_OF_MEMORY (host) when the pool cannot fit it.
  Status AllocateCache(const CacheDesc &cache_desc, Cache &cache);
  /// Unknown ids succeed (upstream).
  Status DeallocateCache(int64_t cache_id);
  /// One slot of every tensor: `size` bytes (-1: to the slot's end) from byte `offset`.
  Status CopyKvCache(const Cache &src_cache, const Cache &dst_cache, uint32_t src_batch_index = 0U,
                     uint32_t dst_batch_index = 0U, uint64_t offset = 0U, int64_t size = -1);
  /// src_blocks[i] -> dst_blocks_list[j][i] for every j; host<->device when placements differ.
  Status CopyKvBlocks(const Cache &src_cache, const Cache &dst_cache, const std::vector<uint64_t> &src_blocks,
                      const std::vector<std::vector<uint64_t>> &dst_blocks_list);
  /// Registers caller memory (one address per tensor) and returns its cache id ([out]).
  Status RegisterKvCache(const CacheDesc &cache_desc, const std::vector<uint64_t> &addrs, const RegisterCfg &cfg,
                         int64_t &cache_id);
  /// Unknown ids succeed (upstream).
  Status UnregisterKvCache(int64_t cache_id);

  /// The message of the last failed call on this thread (ours, not upstream): the Status number
  /// says what, this says which value. The pointer is valid until the next failed call on this
  /// thread; copy it to keep it.
  static const char *LastErrorMessage();

 private:
  class LlmDataDistImpl;
  std::unique_ptr<LlmDataDistImpl> impl_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LLM_DATADIST_H_
