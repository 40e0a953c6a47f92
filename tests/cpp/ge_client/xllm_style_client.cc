// SPDX-License-Identifier: Apache-2.0
// C++ client code written the way code for upstream LLM-DataDist is written (xLLM's KV-cache
// transfer is the model): it includes only the public headers, names types through `ge::` and
// through `using namespace llm_datadist`, builds options as std::map<ge::AscendString,
// ge::AscendString>, checks results against ge::SUCCESS, registers its own memory as a one-tensor
// cache and pushes blocks layer by layer with tensor_num_per_layer = 1. It is built against
// csrc/include only (no private core headers) and run by tests/compat/test_cpp_ge_names.py.
//
// It prints one "ok <check>" line per check that passed and "FAIL <check>: <why>" for the others,
// then "<n> failed"; the exit status is 0 when all passed.
#include <llm_datadist/llm_datadist.h>
#include <llm_datadist/llm_error_codes.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace client {

using namespace llm_datadist;

// Both spellings name one entity, as with upstream's header.
static_assert(std::is_same<llm_datadist::Status, ge::Status>::value, "Status is ge::Status");
static_assert(std::is_same<llm_datadist::DataType, ge::DataType>::value, "DataType is ge::DataType");
static_assert(std::is_same<llm_datadist::AscendString, ge::AscendString>::value, "AscendString");
static_assert(LLM_SUCCESS == ge::SUCCESS && LLM_FAILED == ge::FAILED, "success and failure");
static_assert(ge::LLM_PARAM_INVALID == 0x5010B005U && ge::LLM_NOT_YET_LINK == 0x5010B007U, "ge LLM codes");
// CANN's DataType numbers.
static_assert(ge::DT_FLOAT == 0 && ge::DT_INT16 == 6 && ge::DT_STRING == 13 && ge::DT_BF16 == 27 &&
                  DT_UNDEFINED == 28 && DT_INT4 == 29 && DT_COMPLEX32 == 33 && DT_HIFLOAT8 == 34 &&
                  DT_FLOAT8_E5M2 == 35 && DT_FLOAT8_E4M3FN == 36 && DT_FLOAT8_E8M0 == 37 && DT_FLOAT4_E1M2 == 41 &&
                  ge::DT_HIFLOAT4 == 42,
              "ge::DataType numbers");

// Code that opens both namespaces finds one entity per name, not two.
namespace both {
using namespace ge;
using namespace llm_datadist;
constexpr DataType kType = DT_BF16;
constexpr Status kInvalid = LLM_PARAM_INVALID;
static_assert(kType == 27 && kInvalid == 0x5010B005U && SUCCESS == LLM_SUCCESS, "both namespaces");
inline AscendString Key() { return AscendString(OPTION_DEVICE_ID); }
}  // namespace both

int g_failures = 0;

void Check(bool ok, const std::string &what, const std::string &why = "") {
  if (ok) {
    std::printf("ok %s\n", what.c_str());
  } else {
    ++g_failures;
    std::printf("FAIL %s: %s (last error: %s)\n", what.c_str(), why.c_str(), LlmDataDist::LastErrorMessage());
  }
  std::fflush(stdout);
}

std::string Hex(ge::Status s) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%X", s);
  return buf;
}

void CheckStatus(ge::Status got, ge::Status want, const std::string &what) {
  Check(got == want, what, "returned " + Hex(got) + ", expected " + Hex(want));
}

// One process plays prefill and decode; each engine listens like an xLLM instance does.
struct Instance {
  uint64_t cluster_id;
  uint16_t port = 0;
  std::shared_ptr<LlmDataDist> dist;
};

bool Start(Instance &instance, LlmRole role) {
  instance.dist = std::make_shared<LlmDataDist>(instance.cluster_id, role);
  static uint16_t next_port = static_cast<uint16_t>(23000 + (getpid() % 1500) * 8);
  for (int attempt = 0; attempt < 20; ++attempt) {
    instance.port = next_port++;
    std::map<ge::AscendString, ge::AscendString> options;
    options[OPTION_DEVICE_ID] = std::to_string(0).c_str();
    const std::string listen = "127.0.0.1:" + std::to_string(instance.port);
    options[OPTION_LISTEN_IP_INFO] = listen.c_str();
    options["llm.MemPoolConfig"] = "{\"memory_size\": 8388608}";
    // Ours, not upstream: the test's memory is host memory, so the device is the CPU device.
    options["llmdd.DeviceBackend"] = "cpu";
    if (instance.dist->Initialize(options) == ge::SUCCESS) return true;
  }
  return false;
}

ClusterInfo PeerOf(const Instance &local, const Instance &remote) {
  ClusterInfo cluster;
  IpInfo local_ip;
  IpInfo remote_ip;
  local_ip.ip = "127.0.0.1";
  local_ip.port = local.port;
  remote_ip.ip = "127.0.0.1";
  remote_ip.port = remote.port;
  cluster.remote_cluster_id = remote.cluster_id;
  cluster.local_ip_infos.emplace_back(std::move(local_ip));
  cluster.remote_ip_infos.emplace_back(std::move(remote_ip));
  return cluster;
}

uint8_t Pattern(size_t i, uint8_t salt) { return static_cast<uint8_t>(i * 131 + salt * 7 + 1); }

// One data type: the prefill registers its memory as a one-tensor cache of kBlocks blocks, the
// decode registers its own; the prefill pushes blocks {0, 2} to the decode's {3, 1} with layer
// range {0, 0} and tensor_num_per_layer 1. Every byte of the decode's memory is compared: the
// two target blocks hold the source blocks, the rest is untouched, so a mis-sized element
// shows up as a wrong byte count.
void PushOneTensorBlocks(Instance &prefill, Instance &decode, ge::DataType data_type, size_t element_bytes,
                         const std::string &name, bool default_ext_param) {
  constexpr int64_t kBlocks = 4, kBlockElements = 96;
  const size_t block_bytes = kBlockElements * element_bytes, total = kBlocks * block_bytes;
  std::vector<uint8_t> src(total), dst(total);
  for (size_t i = 0; i < total; ++i) src[i] = Pattern(i, 1);
  for (size_t i = 0; i < total; ++i) dst[i] = Pattern(i, 2);
  const std::vector<uint8_t> dst_before = dst;

  CacheDesc desc;
  desc.num_tensors = 1;
  desc.data_type = data_type;
  desc.shape = {kBlocks, 8, kBlockElements / 8};
  Cache src_cache, dst_cache;
  src_cache.cache_desc = desc;
  dst_cache.cache_desc = desc;
  src_cache.tensor_addrs.push_back(reinterpret_cast<uintptr_t>(src.data()));
  dst_cache.tensor_addrs.push_back(reinterpret_cast<uintptr_t>(dst.data()));
  CheckStatus(prefill.dist->RegisterKvCache(desc, {reinterpret_cast<uint64_t>(src.data())}, {}, src_cache.cache_id),
              ge::SUCCESS, name + ": prefill RegisterKvCache");
  CheckStatus(decode.dist->RegisterKvCache(desc, {reinterpret_cast<uint64_t>(dst.data())}, {}, dst_cache.cache_id),
              ge::SUCCESS, name + ": decode RegisterKvCache");

  CacheIndex dst_index{decode.cluster_id, dst_cache.cache_id};
  KvCacheExtParam ext_param{};
  if (!default_ext_param) {
    ext_param.src_layer_range = std::pair<int32_t, int32_t>(0, 0);
    ext_param.dst_layer_range = std::pair<int32_t, int32_t>(0, 0);
    ext_param.tensor_num_per_layer = 1;
  }
  const std::string how = default_ext_param ? " (default ext_param)" : " (tensor_num_per_layer 1)";
  ge::Status ret = prefill.dist->PushKvBlocks(src_cache, dst_index, {0, 2}, {3, 1}, ext_param);
  CheckStatus(ret, ge::SUCCESS, name + ": PushKvBlocks" + how);
  if (ret == ge::SUCCESS) {
    std::vector<uint8_t> want = dst_before;
    std::memcpy(want.data() + 3 * block_bytes, src.data() + 0 * block_bytes, block_bytes);
    std::memcpy(want.data() + 1 * block_bytes, src.data() + 2 * block_bytes, block_bytes);
    size_t wrong = 0;
    for (size_t i = 0; i < total; ++i) wrong += dst[i] != want[i];
    Check(wrong == 0, name + ": every byte of the decode's cache after the push",
          std::to_string(wrong) + " of " + std::to_string(total) + " bytes differ");
  }
  CheckStatus(prefill.dist->UnregisterKvCache(src_cache.cache_id), ge::SUCCESS, name + ": prefill UnregisterKvCache");
  CheckStatus(decode.dist->UnregisterKvCache(dst_cache.cache_id), ge::SUCCESS, name + ": decode UnregisterKvCache");
}

// Types with no whole-byte element size are refused by name, not mis-sized.
void RefuseSubByteTypes(Instance &instance) {
  std::vector<uint8_t> memory(4096);
  for (ge::DataType dt : {ge::DT_INT4, ge::DT_FLOAT4_E2M1, ge::DT_FLOAT6_E3M2, ge::DT_UINT1, ge::DT_STRING,
                          ge::DT_UNDEFINED, static_cast<ge::DataType>(99)}) {
    CacheDesc desc;
    desc.placement = CachePlacement::kHost;
    desc.num_tensors = 1;
    desc.data_type = dt;
    desc.shape = {4, 64};
    int64_t cache_id = -1;
    const std::string what = "RegisterKvCache refuses data_type " + std::to_string(static_cast<int>(dt));
    CheckStatus(instance.dist->RegisterKvCache(desc, {reinterpret_cast<uint64_t>(memory.data())}, {}, cache_id),
                ge::LLM_PARAM_INVALID, what);
    Check(std::strstr(LlmDataDist::LastErrorMessage(), std::to_string(static_cast<int>(dt)).c_str()) != nullptr,
          what + ": the message names it", LlmDataDist::LastErrorMessage());
  }
}

int Run() {
  Instance prefill{11, 0, nullptr};
  Instance decode{22, 0, nullptr};
  Check(Start(prefill, LlmRole::kPrompt), "prefill Initialize");
  Check(Start(decode, LlmRole::kDecoder), "decode Initialize");
  if (g_failures != 0) return g_failures;

  std::vector<Status> rets;
  std::vector<ClusterInfo> clusters{PeerOf(decode, prefill)};
  CheckStatus(decode.dist->LinkLlmClusters(clusters, rets, /*timeout_in_millis=*/5000), ge::SUCCESS,
              "LinkLlmClusters");
  Check(rets.size() == 1 && rets[0] == ge::SUCCESS, "LinkLlmClusters: one ge::SUCCESS per cluster");

  PushOneTensorBlocks(prefill, decode, ge::DT_BF16, 2, "DT_BF16", false);
  // Upstream: with no layer range every tensor moves, whatever tensor_num_per_layer says.
  PushOneTensorBlocks(prefill, decode, ge::DT_BF16, 2, "DT_BF16", true);
  PushOneTensorBlocks(prefill, decode, ge::DT_FLOAT8_E4M3FN, 1, "DT_FLOAT8_E4M3FN", false);
  PushOneTensorBlocks(prefill, decode, ge::DT_HIFLOAT8, 1, "DT_HIFLOAT8", false);
  PushOneTensorBlocks(prefill, decode, ge::DT_COMPLEX32, 4, "DT_COMPLEX32", false);
  PushOneTensorBlocks(prefill, decode, ge::DT_COMPLEX128, 16, "DT_COMPLEX128", false);
  RefuseSubByteTypes(prefill);

  CheckStatus(decode.dist->UnlinkLlmClusters(clusters, rets, 5000, /*force_flag=*/false), ge::SUCCESS,
              "UnlinkLlmClusters");
  Check(rets.size() == 1 && rets[0] == ge::SUCCESS, "UnlinkLlmClusters: one ge::SUCCESS per cluster");

  // After the unlink the prefill has no link to push over.
  std::vector<uint8_t> memory(4 * 64 * 2);
  Cache cache;
  cache.cache_desc.num_tensors = 1;
  cache.cache_desc.data_type = ge::DT_FLOAT16;
  cache.cache_desc.shape = {4, 64};
  CheckStatus(prefill.dist->RegisterKvCache(cache.cache_desc, {reinterpret_cast<uint64_t>(memory.data())}, {},
                                            cache.cache_id),
              ge::SUCCESS, "RegisterKvCache after the unlink");
  KvCacheExtParam one_per_layer{};
  one_per_layer.tensor_num_per_layer = 1;
  CheckStatus(prefill.dist->PushKvBlocks(cache, CacheIndex{decode.cluster_id, 1}, {0}, {0}, one_per_layer),
              ge::LLM_NOT_YET_LINK, "PushKvBlocks after the unlink");
  prefill.dist->Finalize();
  decode.dist->Finalize();
  return g_failures;
}

}  // namespace client

int main() {
  const int failures = client::Run();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
