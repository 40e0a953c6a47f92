// SPDX-License-Identifier: Apache-2.0
// The upstream-style C++ API, used the way upstream C++ samples use it.
#include <cstring>
#include <vector>

#include "llm_datadist/llm_datadist.h"
#include "test_harness.h"

using namespace llm_datadist;

namespace {
std::map<AscendString, AscendString> Options() {
  return {{OPTION_DEVICE_ID, "0"},
          {OPTION_MEM_POOL_CONFIG, "{\"memory_size\": 16777216}"},
          {OPTION_HOST_MEM_POOL_CONFIG, "{\"memory_size\": 16777216, \"page_shift\": 12}"},
          {OPTION_DEVICE_BACKEND, "cpu"}};
}

CacheDesc Desc(CachePlacement placement, std::vector<int64_t> shape, uint32_t num_tensors = 4) {
  CacheDesc desc;
  desc.placement = placement;
  desc.num_tensors = num_tensors;
  desc.data_type = DT_FLOAT16;
  desc.shape = std::move(shape);
  return desc;
}
}  // namespace

LLMDD_TEST(LlmDataDistApi, InitializeNeedsDeviceId) {
  LlmDataDist dist(1, LlmRole::kPrompt);
  EXPECT_EQ(dist.Initialize({}), LLM_PARAM_INVALID);
  EXPECT_TRUE(std::strstr(LlmDataDist::LastErrorMessage(), "llm.DeviceId") != nullptr);
  EXPECT_EQ(dist.Initialize(Options()), LLM_SUCCESS);
  EXPECT_EQ(dist.Initialize(Options()), LLM_SUCCESS);  // idempotent
  dist.Finalize();
}

LLMDD_TEST(LlmDataDistApi, BadPoolConfigIsParamInvalid) {
  LlmDataDist dist(1, LlmRole::kPrompt);
  auto options = Options();
  options[OPTION_MEM_POOL_CONFIG] = "{\"memory_size\": 1048576, \"page_shift\": 40}";
  EXPECT_EQ(dist.Initialize(options), LLM_PARAM_INVALID);
  EXPECT_TRUE(std::strstr(LlmDataDist::LastErrorMessage(), "page_shift") != nullptr);
}

LLMDD_TEST(LlmDataDistApi, AllocateCopyDeallocate) {
  LlmDataDist dist(7, LlmRole::kPrompt);
  ASSERT_TRUE(dist.Initialize(Options()) == LLM_SUCCESS);
  Cache src, dst, host;
  ASSERT_TRUE(dist.AllocateCache(Desc(CachePlacement::kDevice, {4, 256}), src) == LLM_SUCCESS);
  ASSERT_TRUE(dist.AllocateCache(Desc(CachePlacement::kDevice, {4, 256}), dst) == LLM_SUCCESS);
  ASSERT_TRUE(dist.AllocateCache(Desc(CachePlacement::kHost, {4, 256}), host) == LLM_SUCCESS);
  EXPECT_EQ(src.cache_id, int64_t{1});  // upstream: ids start at 1
  EXPECT_EQ(src.tensor_addrs.size(), size_t{4});
  const size_t tensor_bytes = 4 * 256 * 2, slot = tensor_bytes / 4;
  for (size_t t = 0; t < 4; ++t)
    for (size_t i = 0; i < tensor_bytes; ++i) reinterpret_cast<uint8_t *>(src.tensor_addrs[t])[i] = uint8_t(t * 31 + i);
  EXPECT_EQ(dist.CopyKvCache(src, dst, 1, 3), LLM_SUCCESS);
  EXPECT_EQ(dist.CopyKvCache(src, host, 2, 0, 16, 32), LLM_SUCCESS);
  for (size_t t = 0; t < 4; ++t) {
    auto *s = reinterpret_cast<uint8_t *>(src.tensor_addrs[t]);
    auto *d = reinterpret_cast<uint8_t *>(dst.tensor_addrs[t]);
    auto *h = reinterpret_cast<uint8_t *>(host.tensor_addrs[t]);
    EXPECT_EQ(std::memcmp(d + 3 * slot, s + 1 * slot, slot), 0);
    EXPECT_EQ(std::memcmp(h + 16, s + 2 * slot + 16, 32), 0);
  }
  EXPECT_EQ(dist.CopyKvCache(src, dst, 4, 0), LLM_PARAM_INVALID);       // batch index out of range
  EXPECT_EQ(dist.CopyKvCache(src, dst, 0, 0, 0, slot + 1), LLM_PARAM_INVALID);  // larger than a slot
  Cache missing;
  missing.cache_id = 999;
  EXPECT_EQ(dist.CopyKvCache(missing, dst), LLM_KV_CACHE_NOT_EXIST);
  EXPECT_EQ(dist.CopyKvBlocks(src, host, {0, 1}, {{2, 3}}), LLM_SUCCESS);
  for (size_t t = 0; t < 4; ++t)
    EXPECT_EQ(std::memcmp(reinterpret_cast<uint8_t *>(host.tensor_addrs[t]) + 3 * slot,
                          reinterpret_cast<uint8_t *>(src.tensor_addrs[t]) + 1 * slot, slot), 0);
  EXPECT_EQ(dist.CopyKvBlocks(src, host, {0, 9}, {{2, 3}}), LLM_PARAM_INVALID);
  EXPECT_EQ(dist.DeallocateCache(src.cache_id), LLM_SUCCESS);
  EXPECT_EQ(dist.DeallocateCache(src.cache_id), LLM_SUCCESS);  // unknown id: success (upstream)
  EXPECT_EQ(dist.DeallocateCache(dst.cache_id), LLM_SUCCESS);
  EXPECT_EQ(dist.DeallocateCache(host.cache_id), LLM_SUCCESS);
  dist.Finalize();
}

LLMDD_TEST(LlmDataDistApi, DeviceOutOfMemory) {
  LlmDataDist dist(1, LlmRole::kDecoder);
  ASSERT_TRUE(dist.Initialize(Options()) == LLM_SUCCESS);
  Cache big;
  EXPECT_EQ(dist.AllocateCache(Desc(CachePlacement::kDevice, {64, 1 << 20}, 1), big), LLM_DEVICE_OUT_OF_MEMORY);
  EXPECT_EQ(dist.AllocateCache(Desc(CachePlacement::kHost, {64, 1 << 20}, 1), big), LLM_OUT_OF_MEMORY);
}

LLMDD_TEST(LlmDataDistApi, RegisterUnregisterAndNotYetTransfers) {
  LlmDataDist dist(2, LlmRole::kDecoder);
  ASSERT_TRUE(dist.Initialize(Options()) == LLM_SUCCESS);
  std::vector<uint8_t> a(4096), b(4096);
  int64_t id = -1;
  EXPECT_EQ(dist.RegisterKvCache(Desc(CachePlacement::kHost, {4, 512}, 2),
                                 {reinterpret_cast<uint64_t>(a.data()), reinterpret_cast<uint64_t>(b.data())},
                                 RegisterCfg{}, id),
            LLM_SUCCESS);
  EXPECT_TRUE(id >= 1);
  EXPECT_EQ(dist.RegisterKvCache(Desc(CachePlacement::kHost, {4, 512}, 2), {reinterpret_cast<uint64_t>(a.data())},
                                 RegisterCfg{}, id),
            LLM_PARAM_INVALID);
  EXPECT_EQ(dist.UnregisterKvCache(id), LLM_SUCCESS);
  EXPECT_EQ(dist.UnregisterKvCache(id), LLM_SUCCESS);
  std::vector<Status> rets;
  EXPECT_EQ(dist.LinkLlmClusters({ClusterInfo{}}, rets), LLM_FEATURE_NOT_ENABLED);
  EXPECT_EQ(rets.size(), size_t{1});
  Cache c;
  EXPECT_EQ(dist.PullKvBlocks(CacheIndex{}, c, {0}, {0}), LLM_FEATURE_NOT_ENABLED);
  EXPECT_EQ(dist.SetRole(LlmRole::kPrompt), LLM_SUCCESS);
}
