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

#include "llm_datadist/ge_types.h"

namespace llm_datadist {

// Upstream's header declares these as aliases of CANN's ge names; so does this one, so that
// llm_datadist::DT_BF16 and ge::DT_BF16 are one entity and code with both using-directives
// is not ambiguous.
using ge::AscendString;
using ge::DataType;
using ge::DT_BF16;
using ge::DT_BOOL;
using ge::DT_COMPLEX128;
using ge::DT_COMPLEX32;
using ge::DT_COMPLEX64;
using ge::DT_DOUBLE;
using ge::DT_DUAL;
using ge::DT_DUAL_SUB_INT8;
using ge::DT_DUAL_SUB_UINT8;
using ge::DT_FLOAT;
using ge::DT_FLOAT16;
using ge::DT_FLOAT4_E1M2;
using ge::DT_FLOAT4_E2M1;
using ge::DT_FLOAT6_E2M3;
using ge::DT_FLOAT6_E3M2;
using ge::DT_FLOAT8_E4M3FN;
using ge::DT_FLOAT8_E5M2;
using ge::DT_FLOAT8_E8M0;
using ge::DT_HIFLOAT8;
using ge::DT_INT16;
using ge::DT_INT2;
using ge::DT_INT32;
using ge::DT_INT4;
using ge::DT_INT64;
using ge::DT_INT8;
using ge::DT_QINT16;
using ge::DT_QINT32;
using ge::DT_QINT8;
using ge::DT_QUINT16;
using ge::DT_QUINT8;
using ge::DT_RESOURCE;
using ge::DT_STRING;
using ge::DT_STRING_REF;
using ge::DT_UINT1;
using ge::DT_UINT16;
using ge::DT_UINT2;
using ge::DT_UINT32;
using ge::DT_UINT64;
using ge::DT_UINT8;
using ge::DT_UNDEFINED;
using ge::DT_VARIANT;

// Bytes per element (CANN's sizes), or -1 when the type has no whole-byte element size that a
// cache tensor of `shape` could be sized by: DT_STRING, DT_STRING_REF, DT_UNDEFINED, the
// sub-byte types (DT_INT4, DT_UINT1, DT_INT2, DT_UINT2, DT_FLOAT6_*, DT_FLOAT4_*, DT_HIFLOAT4)
// and numbers that name no type. Such types are refused (LLM_PARAM_INVALID), never mis-sized.
int64_t DataTypeSize(int32_t data_type);
// "DT_BF16"; "" for numbers that name no type.
const char *DataTypeName(int32_t data_type);

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

// Upstream's name for the default tensors per layer (a K and a V tensor).
constexpr uint8_t kDefaultTensorNumPerLayer = 2U;

// Layer ranges are inclusive [first, second]; -1 means all layers (upstream C++ convention).
struct KvCacheExtParam {
  std::pair<int32_t, int32_t> src_layer_range = {-1, -1};
  std::pair<int32_t, int32_t> dst_layer_range = {-1, -1};
  uint8_t tensor_num_per_layer = kDefaultTensorNumPerLayer;
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
