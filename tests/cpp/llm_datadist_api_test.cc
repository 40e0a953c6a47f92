// SPDX-License-Identifier: Apache-2.0
// The upstream-style C++ API, used the way upstream C++ samples use it.
#include <unistd.h>

#include <cstring>
#include <string>
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
  LlmDataDist no_role(1, LlmRole::kEnd);  // upstream: "Invalid role" before anything else
  EXPECT_EQ(no_role.Initialize(Options()), LLM_PARAM_INVALID);
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
  EXPECT_EQ(dist.LinkLlmClusters({}, rets), LLM_PARAM_INVALID);
  EXPECT_EQ(dist.LinkLlmClusters({ClusterInfo{}}, rets, 0), LLM_PARAM_INVALID);
  EXPECT_EQ(dist.LinkLlmClusters({ClusterInfo{}}, rets), LLM_PARAM_INVALID);  // no remote ip info
  EXPECT_EQ(rets.size(), size_t{1});
  // No limit on clusters per call (upstream's llm_link_manager.cc): each of 17 gets its code.
  EXPECT_EQ(dist.LinkLlmClusters(std::vector<ClusterInfo>(17), rets), LLM_PARAM_INVALID);
  EXPECT_EQ(rets.size(), size_t{17});
  // An ip string that is no IP fails the whole call before any link, rets left empty
  // (upstream's ConvertIpInfos); unlink checks them the same way.
  ClusterInfo bad_ip;
  bad_ip.remote_cluster_id = 9;
  bad_ip.remote_ip_infos.push_back(IpInfo{AscendString("127.0.0.1"), 26000});
  bad_ip.local_ip_infos.push_back(IpInfo{AscendString("not-an-ip"), 0});
  rets.clear();
  EXPECT_EQ(dist.LinkLlmClusters({bad_ip}, rets), LLM_PARAM_INVALID);
  EXPECT_EQ(rets.size(), size_t{0});
  EXPECT_EQ(dist.UnlinkLlmClusters({bad_ip}, rets, 1000), LLM_PARAM_INVALID);
  EXPECT_EQ(rets.size(), size_t{0});
  Cache c;
  EXPECT_EQ(dist.PullKvBlocks(CacheIndex{}, c, {0}, {0}), LLM_KV_CACHE_NOT_EXIST);
  EXPECT_EQ(dist.SetRole(LlmRole::kPrompt), LLM_SUCCESS);
}

namespace {
uint16_t PickPort() {
  static uint16_t next = static_cast<uint16_t>(21000 + (getpid() % 2000) * 10);
  return next++;
}

std::map<AscendString, AscendString> WithOption(std::map<AscendString, AscendString> options, const char *key,
                                                 const std::string &value) {
  options[key] = value;
  return options;
}

void Fill(const Cache &cache, size_t tensor_bytes, uint8_t salt) {
  for (size_t t = 0; t < cache.tensor_addrs.size(); ++t)
    for (size_t i = 0; i < tensor_bytes; ++i)
      reinterpret_cast<uint8_t *>(cache.tensor_addrs[t])[i] = static_cast<uint8_t>(i * 7 + t * 13 + salt);
}

bool SameBytes(const Cache &a, size_t a_off, const Cache &b, size_t b_off, size_t n) {
  for (size_t t = 0; t < a.tensor_addrs.size(); ++t)
    if (std::memcmp(reinterpret_cast<uint8_t *>(a.tensor_addrs[t]) + a_off,
                    reinterpret_cast<uint8_t *>(b.tensor_addrs[t]) + b_off, n) != 0)
      return false;
  return true;
}
}  // namespace

// Two instances in one process linked over loopback: link, pull a slot, pull blocks, push a
// slot, the link codes, unlink. Over shm (same host) and forced tcp.
LLMDD_TEST(LlmDataDistApi, LinkPullPushBetweenInstances) {
  for (const char *transport : {"auto", "tcp"}) {
    uint16_t port = 0;
    LlmDataDist prompt(1, LlmRole::kPrompt);
    Status init = LLM_FAILED;
    for (int attempt = 0; attempt < 20 && init != LLM_SUCCESS; ++attempt) {
      port = PickPort();
      init = prompt.Initialize(WithOption(Options(), OPTION_LISTEN_IP_INFO, "127.0.0.1:" + std::to_string(port)));
    }
    ASSERT_TRUE(init == LLM_SUCCESS);
    LlmDataDist decoder(2, LlmRole::kDecoder);
    ASSERT_TRUE(decoder.Initialize(WithOption(Options(), "llmdd.Transport", transport)) == LLM_SUCCESS);
    const CacheDesc desc = Desc(CachePlacement::kDevice, {8, 256});
    const size_t tensor_bytes = 8 * 256 * 2, slot = tensor_bytes / 8;
    Cache p_cache, d_cache;
    ASSERT_TRUE(prompt.AllocateCache(desc, p_cache) == LLM_SUCCESS);
    ASSERT_TRUE(decoder.AllocateCache(desc, d_cache) == LLM_SUCCESS);
    Fill(p_cache, tensor_bytes, 1);
    Fill(d_cache, tensor_bytes, 99);

    ClusterInfo cluster;
    cluster.remote_cluster_id = 1;
    IpInfo remote;
    remote.ip = "127.0.0.1";
    remote.port = port;
    cluster.remote_ip_infos.push_back(remote);
    std::vector<Status> rets;
    EXPECT_EQ(decoder.LinkLlmClusters({cluster}, rets, 2000), LLM_SUCCESS);
    EXPECT_EQ(rets.at(0), LLM_SUCCESS);
    EXPECT_EQ(decoder.LinkLlmClusters({cluster}, rets, 2000), LLM_ALREADY_LINK);
    EXPECT_EQ(decoder.SetRole(LlmRole::kPrompt), LLM_EXIST_LINK);

    EXPECT_EQ(decoder.PullKvCache(CacheIndex{1, p_cache.cache_id, 2}, d_cache, 5), LLM_SUCCESS);
    EXPECT_TRUE(SameBytes(d_cache, 5 * slot, p_cache, 2 * slot, slot));
    EXPECT_EQ(decoder.PullKvBlocks(CacheIndex{1, p_cache.cache_id, 0}, d_cache, {0, 3}, {1, 2}), LLM_SUCCESS);
    EXPECT_TRUE(SameBytes(d_cache, 1 * slot, p_cache, 0, slot));
    EXPECT_TRUE(SameBytes(d_cache, 2 * slot, p_cache, 3 * slot, slot));
    KvCacheExtParam layers;  // layer 1 only: tensors 2 and 3
    layers.src_layer_range = {1, 1};
    layers.dst_layer_range = {1, 1};
    EXPECT_EQ(decoder.PullKvCache(CacheIndex{1, p_cache.cache_id, 6}, d_cache, 6, -1, layers), LLM_SUCCESS);
    EXPECT_TRUE(std::memcmp(reinterpret_cast<uint8_t *>(d_cache.tensor_addrs[2]) + 6 * slot,
                            reinterpret_cast<uint8_t *>(p_cache.tensor_addrs[2]) + 6 * slot, slot) == 0);
    EXPECT_FALSE(std::memcmp(reinterpret_cast<uint8_t *>(d_cache.tensor_addrs[0]) + 6 * slot,
                             reinterpret_cast<uint8_t *>(p_cache.tensor_addrs[0]) + 6 * slot, slot) == 0);
    EXPECT_EQ(decoder.PushKvCache(d_cache, CacheIndex{1, p_cache.cache_id, 7}, 0), LLM_SUCCESS);
    EXPECT_TRUE(SameBytes(p_cache, 7 * slot, d_cache, 0, slot));
    EXPECT_EQ(decoder.PushKvBlocks(d_cache, CacheIndex{1, p_cache.cache_id, 0}, {1}, {4}), LLM_SUCCESS);
    EXPECT_TRUE(SameBytes(p_cache, 4 * slot, d_cache, 1 * slot, slot));
    EXPECT_EQ(decoder.PushKvBlocks(d_cache, CacheIndex{1, p_cache.cache_id, 0}, {1}, {8}), LLM_PARAM_INVALID);
    EXPECT_EQ(decoder.PullKvCache(CacheIndex{1, p_cache.cache_id, 8}, d_cache, 0), LLM_KV_CACHE_NOT_EXIST);
    EXPECT_EQ(decoder.PullKvCache(CacheIndex{1, 999, 0}, d_cache, 0), LLM_KV_CACHE_NOT_EXIST);
    EXPECT_EQ(decoder.PullKvBlocks(CacheIndex{1, p_cache.cache_id, 0}, d_cache, {8}, {0}), LLM_PARAM_INVALID);
    EXPECT_EQ(decoder.PullKvCache(CacheIndex{2, d_cache.cache_id, 0}, d_cache, 0), LLM_PARAM_INVALID);  // own id

    // The prompt side can pull from the decoder over the same link.
    EXPECT_EQ(prompt.PullKvCache(CacheIndex{2, d_cache.cache_id, 1}, p_cache, 0), LLM_SUCCESS);
    EXPECT_TRUE(SameBytes(p_cache, 0, d_cache, slot, slot));

    EXPECT_EQ(decoder.UnlinkLlmClusters({cluster}, rets, 2000), LLM_SUCCESS);
    EXPECT_EQ(decoder.PullKvCache(CacheIndex{1, p_cache.cache_id, 2}, d_cache, 5), LLM_NOT_YET_LINK);
    // Unlinking what is gone succeeds (upstream's comm_entity_manager.cc DestroyEntity).
    EXPECT_EQ(decoder.UnlinkLlmClusters({cluster}, rets, 2000), LLM_SUCCESS);
    EXPECT_EQ(decoder.SetRole(LlmRole::kPrompt), LLM_SUCCESS);
  }
}
