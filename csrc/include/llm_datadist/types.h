// SPDX-License-Identifier: Apache-2.0
// Plain data types of the upstream-compatible C++ API (llm_datadist.h). Field names, order and
// defaults follow upstream LLM-DataDist; the reserved tails keep struct sizes upstream-like.
#ifndef LLM_DATADIST_TYPES_H_
#define LLM_DATADIST_TYPES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

namespace llm_datadist {

// Upstream passes options as std::map<AscendString, AscendString>; this is a drop-in with the
// parts of ge::AscendString that option maps use.
class AscendString {
 public:
  AscendString() = default;
  AscendString(const char *s) : value_(s == nullptr ? "" : s) {}  // NOLINT: implicit as upstream
  AscendString(std::string s) : value_(std::move(s)) {}           // NOLINT
  const char *GetString() const { return value_.c_str(); }
  size_t GetLength() const { return value_.size(); }
  const std::string &str() const { return value_; }
  bool operator<(const AscendString &o) const { return value_ < o.value_; }
  bool operator==(const AscendString &o) const { return value_ == o.value_; }

 private:
  std::string value_;
};

// ge::DataType numbers (the subset upstream Python exposes, plus DT_UNDEFINED).
enum DataType : int32_t {
  DT_FLOAT = 0,
  DT_FLOAT16 = 1,
  DT_INT8 = 2,
  DT_INT32 = 3,
  DT_UINT8 = 4,
  DT_INT16 = 6,
  DT_UINT16 = 7,
  DT_UINT32 = 8,
  DT_INT64 = 9,
  DT_UINT64 = 10,
  DT_DOUBLE = 11,
  DT_BOOL = 12,
  DT_STRING = 13,
  DT_BF16 = 27,
  DT_UNDEFINED = 28,
};

// Bytes per element, or -1 when the type has no fixed element size (DT_STRING, DT_UNDEFINED,
// unknown numbers).
int64_t DataTypeSize(int32_t data_type);

enum class LlmRole : int32_t { kPrompt = 1, kDecoder = 2, kMix = 3, kEnd };

enum class CachePlacement : uint32_t { kHost = 0U, kDevice = 1U };

struct IpInfo {
  AscendString ip;
  uint16_t port = 0U;
  uint8_t reserved[128] = {};
};

struct ClusterInfo {
  uint64_t remote_cluster_id = 0U;
  int32_t remote_role_type = 0;
  std::vector<IpInfo> local_ip_infos;
  std::vector<IpInfo> remote_ip_infos;
  uint8_t reserved[128] = {};
};

struct CacheIndex {
  uint64_t cluster_id = 0U;
  int64_t cache_id = -1;
  uint32_t batch_index = 0U;
  uint8_t reserved[128] = {};
};

struct CacheDesc {
  CachePlacement placement = CachePlacement::kDevice;
  uint32_t num_tensors = 0U;
  DataType data_type = DT_UNDEFINED;
  std::vector<int64_t> shape;
  uint8_t reserved[128] = {};
};

struct Cache {
  int64_t cache_id = -1;
  std::vector<uintptr_t> tensor_addrs;
  CacheDesc cache_desc;
  uint8_t reserved[128] = {};
};

// Layer ranges are inclusive [first, second]; -1 means all layers (upstream C++ convention).
struct KvCacheExtParam {
  std::pair<int32_t, int32_t> src_layer_range = {-1, -1};
  std::pair<int32_t, int32_t> dst_layer_range = {-1, -1};
  uint8_t tensor_num_per_layer = 2U;
  uint8_t reserved[127] = {};
};

struct RegisterCfg {
  uint8_t reserved[128] = {};
};

// Option keys (upstream spellings).
constexpr const char OPTION_LISTEN_IP_INFO[] = "llm.ListenIpInfo";
constexpr const char OPTION_DEVICE_ID[] = "llm.DeviceId";
constexpr const char OPTION_SYNC_CACHE_WAIT_TIME[] = "llm.SyncKvCacheWaitTime";
constexpr const char OPTION_BUF_POOL_CFG[] = "llm.BufPoolCfg";
constexpr const char OPTION_ENABLE_SET_ROLE[] = "llm.EnableSwitchRole";
constexpr const char OPTION_LOCAL_COMM_RES[] = "llm.LocalCommRes";
constexpr const char OPTION_TRANSFER_BACKEND[] = "llm.TransferBackend";
constexpr const char OPTION_GLOBAL_RESOURCE_CONFIG[] = "llm.GlobalResourceConfig";
constexpr const char OPTION_MEM_POOL_CONFIG[] = "llm.MemPoolConfig";
constexpr const char OPTION_HOST_MEM_POOL_CONFIG[] = "llm.HostMemPoolConfig";
// Ours (not upstream): which memory Placement::DEVICE means. "auto" (default: CUDA when a CUDA
// device is visible, else CPU), "cuda", or "cpu" (a CPU device backed by host memory).
constexpr const char OPTION_DEVICE_BACKEND[] = "llmdd.DeviceBackend";

}  // namespace llm_datadist

#endif  // LLM_DATADIST_TYPES_H_
