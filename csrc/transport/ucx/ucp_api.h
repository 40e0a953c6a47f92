// SPDX-License-Identifier: Apache-2.0
// UCX's UCP API, loaded at run time.
//
// The build needs no UCX: this header declares the few UCP types, constants and functions the
// core uses, laid out as UCX's stable ABI has them (checked against UCX 1.13's headers by
// tests/cpp/ucp_abi_test.cc when the headers are installed). The parameter structs carry a
// field mask and UCX reads only the fields the mask names, so a struct declared shorter than a
// newer UCX's is fine as long as the mask names only the fields declared here; the struct
// prefixes must match exactly. Api() dlopens libucp when first asked.
//
// Environment:
//   LLMDD_UCX_LIBRARY  path of the libucp to load instead of libucp.so.0 / libucp.so (a vendor
//                      UCX, or the one in a wheel such as libucx-cu12); UCX's own variables
//                      (UCX_TLS, UCX_NET_DEVICES, ...) apply as usual.
//
// A host without a usable UCX (no library, missing symbols, an API older than 1.10) is an
// ordinary state: Api() returns nullptr with the reason and Probe() says available == false.
// Thread-safety: loading happens once (std::call_once); Api() and Probe() may be called from
// any thread.
#ifndef LLM_DATADIST_TRANSPORT_UCX_UCP_API_H_
#define LLM_DATADIST_TRANSPORT_UCX_UCP_API_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist::ucx {

// ---- Minimal UCP declarations (ABI-compatible with ucp.h, 64-bit Linux) ----

// ucs_status_t is a packed enum: one signed byte, also as a return value.
using ucs_status_t = int8_t;
using ucs_status_ptr_t = void *;
constexpr ucs_status_t UCS_OK = 0;
constexpr ucs_status_t UCS_INPROGRESS = 1;
constexpr ucs_status_t UCS_ERR_NO_MESSAGE = -1;
constexpr ucs_status_t UCS_ERR_NO_RESOURCE = -2;
constexpr ucs_status_t UCS_ERR_IO_ERROR = -3;
constexpr ucs_status_t UCS_ERR_NO_MEMORY = -4;
constexpr ucs_status_t UCS_ERR_INVALID_PARAM = -5;
constexpr ucs_status_t UCS_ERR_UNREACHABLE = -6;
constexpr ucs_status_t UCS_ERR_INVALID_ADDR = -7;
constexpr ucs_status_t UCS_ERR_NOT_IMPLEMENTED = -8;
constexpr ucs_status_t UCS_ERR_BUSY = -15;
constexpr ucs_status_t UCS_ERR_CANCELED = -16;
constexpr ucs_status_t UCS_ERR_TIMED_OUT = -20;
constexpr ucs_status_t UCS_ERR_UNSUPPORTED = -22;
constexpr ucs_status_t UCS_ERR_REJECTED = -23;
constexpr ucs_status_t UCS_ERR_NOT_CONNECTED = -24;
constexpr ucs_status_t UCS_ERR_CONNECTION_RESET = -25;
constexpr ucs_status_t UCS_ERR_FIRST_LINK_FAILURE = -40;
constexpr ucs_status_t UCS_ERR_LAST_ENDPOINT_FAILURE = -89;
constexpr ucs_status_t UCS_ERR_LAST = -100;

// UCS_PTR_IS_ERR / UCS_PTR_STATUS / UCS_PTR_IS_PTR of ucs/type/status.h.
inline bool UcsPtrIsErr(ucs_status_ptr_t p) {
  return reinterpret_cast<uintptr_t>(p) >= static_cast<uintptr_t>(UCS_ERR_LAST);
}
inline ucs_status_t UcsPtrStatus(ucs_status_ptr_t p) {
  return static_cast<ucs_status_t>(reinterpret_cast<intptr_t>(p));
}
inline bool UcsPtrIsPtr(ucs_status_ptr_t p) {
  return p != nullptr && !UcsPtrIsErr(p);
}

typedef struct ucp_context *ucp_context_h;
typedef struct ucp_config ucp_config_t;
typedef struct ucp_worker *ucp_worker_h;
typedef struct ucp_ep *ucp_ep_h;
typedef struct ucp_address ucp_address_t;
typedef struct ucp_mem *ucp_mem_h;
typedef struct ucp_rkey *ucp_rkey_h;

// ucs_memory_type_t / ucs_thread_mode_t / ucp_err_handling_mode_t: plain enums (int).
constexpr int UCS_MEMORY_TYPE_HOST = 0;
constexpr int UCS_MEMORY_TYPE_CUDA = 1;
constexpr int UCS_THREAD_MODE_SERIALIZED = 1;
constexpr int UCP_ERR_HANDLING_MODE_PEER = 1;

constexpr uint64_t UCP_PARAM_FIELD_FEATURES = 1ULL << 0;
constexpr uint64_t UCP_FEATURE_RMA = 1ULL << 1;
constexpr uint64_t UCP_FEATURE_WAKEUP = 1ULL << 4;
constexpr uint64_t UCP_FEATURE_AM = 1ULL << 6;

constexpr uint64_t UCP_WORKER_PARAM_FIELD_THREAD_MODE = 1ULL << 0;
constexpr uint64_t UCP_WORKER_PARAM_FIELD_EVENTS = 1ULL << 2;
constexpr unsigned UCP_WAKEUP_RMA = 1U << 0;
constexpr unsigned UCP_WAKEUP_TX = 1U << 10;
constexpr unsigned UCP_WAKEUP_RX = 1U << 11;

constexpr uint64_t UCP_EP_PARAM_FIELD_REMOTE_ADDRESS = 1ULL << 0;
constexpr uint64_t UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE = 1ULL << 1;
constexpr uint64_t UCP_EP_PARAM_FIELD_ERR_HANDLER = 1ULL << 2;
constexpr uint32_t UCP_EP_CLOSE_FLAG_FORCE = 1U << 0;

constexpr uint64_t UCP_MEM_MAP_PARAM_FIELD_ADDRESS = 1ULL << 0;
constexpr uint64_t UCP_MEM_MAP_PARAM_FIELD_LENGTH = 1ULL << 1;
constexpr uint64_t UCP_MEM_MAP_PARAM_FIELD_PROT = 1ULL << 3;
constexpr uint64_t UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE = 1ULL << 4;
constexpr unsigned UCP_MEM_MAP_PROT_LOCAL_READ = 1U << 0;
constexpr unsigned UCP_MEM_MAP_PROT_LOCAL_WRITE = 1U << 1;
constexpr unsigned UCP_MEM_MAP_PROT_REMOTE_READ = 1U << 8;
constexpr unsigned UCP_MEM_MAP_PROT_REMOTE_WRITE = 1U << 9;

constexpr uint32_t UCP_OP_ATTR_FIELD_CALLBACK = 1U << 1;
constexpr uint32_t UCP_OP_ATTR_FIELD_USER_DATA = 1U << 2;
constexpr uint32_t UCP_OP_ATTR_FIELD_FLAGS = 1U << 4;
constexpr uint32_t UCP_AM_SEND_FLAG_EAGER = 1U << 1;
constexpr uint64_t UCP_AM_HANDLER_PARAM_FIELD_ID = 1ULL << 0;
constexpr uint64_t UCP_AM_HANDLER_PARAM_FIELD_FLAGS = 1ULL << 1;
constexpr uint64_t UCP_AM_HANDLER_PARAM_FIELD_CB = 1ULL << 2;
constexpr uint64_t UCP_AM_HANDLER_PARAM_FIELD_ARG = 1ULL << 3;
constexpr uint32_t UCP_AM_FLAG_WHOLE_MSG = 1U << 0;
constexpr uint64_t UCP_AM_RECV_ATTR_FLAG_RNDV = 1ULL << 17;

// The prefixes of ucp_params_t, ucp_worker_params_t, ucp_ep_params_t, ucp_mem_map_params_t
// and ucp_request_param_t that the core fills (see the header comment on masks).
struct UcpParams {
  uint64_t field_mask;
  uint64_t features;
};
struct UcsCpuSet {
  unsigned long bits[1024 / (8 * sizeof(unsigned long))];  // UCS_CPU_SETSIZE bits
};
struct UcpWorkerParams {
  uint64_t field_mask;
  int thread_mode;
  UcsCpuSet cpu_mask;
  unsigned events;
};
using ucp_err_handler_cb_t = void (*)(void *arg, ucp_ep_h ep, ucs_status_t status);
struct UcpErrHandler {
  ucp_err_handler_cb_t cb;
  void *arg;
};
struct UcpEpParams {
  uint64_t field_mask;
  const ucp_address_t *address;
  int err_mode;
  UcpErrHandler err_handler;
};
struct UcpMemMapParams {
  uint64_t field_mask;
  void *address;
  size_t length;
  unsigned flags;
  unsigned prot;
  int memory_type;
};
using ucp_send_nbx_callback_t = void (*)(void *request, ucs_status_t status, void *user_data);
struct UcpRequestParam {
  uint32_t op_attr_mask;
  uint32_t flags;
  void *request;
  ucp_send_nbx_callback_t cb;  // the `send` member of the callback union
  uint64_t datatype;
  void *user_data;
};

struct UcpAmRecvParam {
  uint64_t recv_attr;
  ucp_ep_h reply_ep;
};
using ucp_am_recv_callback_t = ucs_status_t (*)(void *arg, const void *header, size_t header_length,
                                                void *data, size_t length,
                                                const UcpAmRecvParam *param);
struct UcpAmHandlerParam {
  uint64_t field_mask;
  unsigned id;
  uint32_t flags;
  ucp_am_recv_callback_t cb;
  void *arg;
};

// The functions, under UCP's exported names.
struct UcpApi {
  void (*ucp_get_version)(unsigned *major, unsigned *minor, unsigned *release);
  const char *(*ucp_get_version_string)();
  ucs_status_t (*ucp_config_read)(const char *env_prefix, const char *filename,
                                  ucp_config_t **config);
  void (*ucp_config_release)(ucp_config_t *config);
  ucs_status_t (*ucp_config_modify)(ucp_config_t *config, const char *name, const char *value);
  ucs_status_t (*ucp_init_version)(unsigned api_major, unsigned api_minor,
                                   const UcpParams *params, const ucp_config_t *config,
                                   ucp_context_h *context);
  void (*ucp_cleanup)(ucp_context_h context);
  void (*ucp_context_print_info)(ucp_context_h context, FILE *stream);
  ucs_status_t (*ucp_worker_create)(ucp_context_h context, const UcpWorkerParams *params,
                                    ucp_worker_h *worker);
  void (*ucp_worker_destroy)(ucp_worker_h worker);
  ucs_status_t (*ucp_worker_get_address)(ucp_worker_h worker, ucp_address_t **address,
                                         size_t *length);
  void (*ucp_worker_release_address)(ucp_worker_h worker, ucp_address_t *address);
  unsigned (*ucp_worker_progress)(ucp_worker_h worker);
  ucs_status_t (*ucp_worker_get_efd)(ucp_worker_h worker, int *fd);
  ucs_status_t (*ucp_worker_arm)(ucp_worker_h worker);
  ucs_status_t (*ucp_ep_create)(ucp_worker_h worker, const UcpEpParams *params, ucp_ep_h *ep);
  ucs_status_ptr_t (*ucp_ep_close_nbx)(ucp_ep_h ep, const UcpRequestParam *param);
  ucs_status_ptr_t (*ucp_ep_flush_nbx)(ucp_ep_h ep, const UcpRequestParam *param);
  ucs_status_t (*ucp_mem_map)(ucp_context_h context, const UcpMemMapParams *params,
                              ucp_mem_h *memh);
  ucs_status_t (*ucp_mem_unmap)(ucp_context_h context, ucp_mem_h memh);
  ucs_status_t (*ucp_rkey_pack)(ucp_context_h context, ucp_mem_h memh, void **buffer,
                                size_t *size);
  void (*ucp_rkey_buffer_release)(void *buffer);
  ucs_status_t (*ucp_ep_rkey_unpack)(ucp_ep_h ep, const void *buffer, ucp_rkey_h *rkey);
  void (*ucp_rkey_destroy)(ucp_rkey_h rkey);
  ucs_status_ptr_t (*ucp_get_nbx)(ucp_ep_h ep, void *buffer, size_t count, uint64_t remote_addr,
                                  ucp_rkey_h rkey, const UcpRequestParam *param);
  ucs_status_ptr_t (*ucp_put_nbx)(ucp_ep_h ep, const void *buffer, size_t count,
                                  uint64_t remote_addr, ucp_rkey_h rkey,
                                  const UcpRequestParam *param);
  ucs_status_t (*ucp_worker_set_am_recv_handler)(ucp_worker_h worker,
                                                 const UcpAmHandlerParam *param);
  ucs_status_ptr_t (*ucp_am_send_nbx)(ucp_ep_h ep, unsigned id, const void *header,
                                      size_t header_length, const void *buffer, size_t count,
                                      const UcpRequestParam *param);
  ucs_status_t (*ucp_request_check_status)(void *request);
  void (*ucp_request_free)(void *request);
  const char *(*ucs_status_string)(ucs_status_t status);
};

// The API version the core asks ucp_init_version for: the oldest UCP with every function and
// field used here (ucp_*_nbx, UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE).
constexpr unsigned kUcpApiMajor = 1;
constexpr unsigned kUcpApiMinor = 10;

// The loaded API, or nullptr when UCX is unusable here; then *why_not (when given) says why.
// Loads on the first call only; later calls return the same answer. The library is never
// closed (UCX registers process-wide hooks at load).
const UcpApi *Api(std::string *why_not = nullptr);

// What Probe() found.
struct UcxInfo {
  bool available = false;
  std::string reason;        // empty when available
  std::string library_path;  // the libucp actually loaded
  std::string version;       // "1.13.1"
  // The transport resources a context sees here, as "tl/device" ("tcp/lo", "rc_mlx5/mlx5_0:1",
  // "cuda_copy/cuda"), under the current UCX_* environment. Empty when unavailable.
  std::vector<std::string> transports;
};

// Loads UCX if needed, creates one RMA context to list its transports and describes it.
// Computed once; later calls copy the cached value.
UcxInfo Probe();

// A ucs_status_t as "UCS_ERR_CONNECTION_RESET (-25): Connection reset by remote peer" (the
// library's own text when it is loaded).
std::string DescribeUcs(ucs_status_t status);

// Maps a failed UCX status to the library's status, in one place:
//   peer and link failures (connection reset, unreachable, endpoint timeout, not connected,
//   rejected, I/O error, the UCS link/endpoint failure ranges) -> LLM_LINK_FAILED;
//   UCS_ERR_TIMED_OUT -> LLM_TIMEOUT; UCS_ERR_NO_MEMORY -> LLM_OUT_OF_MEMORY;
//   UCS_ERR_UNSUPPORTED / NOT_IMPLEMENTED -> LLM_FEATURE_NOT_ENABLED; anything else LLM_FAILED.
// Message "<call> failed: <DescribeUcs>"; context ucx_call, ucx_status.
DetailedStatus CheckUcs(ucs_status_t status, const char *call);

}  // namespace llm_datadist::ucx

#endif  // LLM_DATADIST_TRANSPORT_UCX_UCP_API_H_
