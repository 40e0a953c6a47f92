// SPDX-License-Identifier: Apache-2.0
// The UCP declarations of csrc/transport/ucx/ucp_api.h against UCX's own headers, where they are
// installed (libucx-dev): every constant, and the size and offset of every struct field the core
// fills. A mismatch fails the build of this test, not a run. Without the headers only the
// runtime note below runs.
#include <cstddef>
#include <iostream>
#include <type_traits>

#include "test_harness.h"
#include "transport/ucx/ucp_api.h"

#if __has_include(<ucp/api/ucp.h>)
#include <ucp/api/ucp.h>
#define LLMDD_HAVE_UCX_HEADERS 1

namespace ours = llm_datadist::ucx;

#define LLMDD_SAME_VALUE(name) static_assert(ours::name == ::name, #name " differs from ucp.h")
LLMDD_SAME_VALUE(UCS_OK);
LLMDD_SAME_VALUE(UCS_INPROGRESS);
LLMDD_SAME_VALUE(UCS_ERR_NO_MESSAGE);
LLMDD_SAME_VALUE(UCS_ERR_NO_RESOURCE);
LLMDD_SAME_VALUE(UCS_ERR_IO_ERROR);
LLMDD_SAME_VALUE(UCS_ERR_NO_MEMORY);
LLMDD_SAME_VALUE(UCS_ERR_INVALID_PARAM);
LLMDD_SAME_VALUE(UCS_ERR_UNREACHABLE);
LLMDD_SAME_VALUE(UCS_ERR_INVALID_ADDR);
LLMDD_SAME_VALUE(UCS_ERR_NOT_IMPLEMENTED);
LLMDD_SAME_VALUE(UCS_ERR_BUSY);
LLMDD_SAME_VALUE(UCS_ERR_CANCELED);
LLMDD_SAME_VALUE(UCS_ERR_TIMED_OUT);
LLMDD_SAME_VALUE(UCS_ERR_UNSUPPORTED);
LLMDD_SAME_VALUE(UCS_ERR_REJECTED);
LLMDD_SAME_VALUE(UCS_ERR_NOT_CONNECTED);
LLMDD_SAME_VALUE(UCS_ERR_CONNECTION_RESET);
LLMDD_SAME_VALUE(UCS_ERR_FIRST_LINK_FAILURE);
LLMDD_SAME_VALUE(UCS_ERR_LAST_ENDPOINT_FAILURE);
LLMDD_SAME_VALUE(UCS_ERR_LAST);
LLMDD_SAME_VALUE(UCS_MEMORY_TYPE_HOST);
LLMDD_SAME_VALUE(UCS_MEMORY_TYPE_CUDA);
LLMDD_SAME_VALUE(UCS_THREAD_MODE_SERIALIZED);
LLMDD_SAME_VALUE(UCP_ERR_HANDLING_MODE_PEER);
LLMDD_SAME_VALUE(UCP_PARAM_FIELD_FEATURES);
LLMDD_SAME_VALUE(UCP_FEATURE_RMA);
LLMDD_SAME_VALUE(UCP_FEATURE_WAKEUP);
LLMDD_SAME_VALUE(UCP_WORKER_PARAM_FIELD_THREAD_MODE);
LLMDD_SAME_VALUE(UCP_WORKER_PARAM_FIELD_EVENTS);
LLMDD_SAME_VALUE(UCP_WAKEUP_RMA);
LLMDD_SAME_VALUE(UCP_WAKEUP_TX);
LLMDD_SAME_VALUE(UCP_WAKEUP_RX);
LLMDD_SAME_VALUE(UCP_EP_PARAM_FIELD_REMOTE_ADDRESS);
LLMDD_SAME_VALUE(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE);
LLMDD_SAME_VALUE(UCP_EP_PARAM_FIELD_ERR_HANDLER);
LLMDD_SAME_VALUE(UCP_EP_CLOSE_FLAG_FORCE);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PARAM_FIELD_ADDRESS);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PARAM_FIELD_LENGTH);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PARAM_FIELD_PROT);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PROT_LOCAL_READ);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PROT_LOCAL_WRITE);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PROT_REMOTE_READ);
LLMDD_SAME_VALUE(UCP_MEM_MAP_PROT_REMOTE_WRITE);
LLMDD_SAME_VALUE(UCP_OP_ATTR_FIELD_CALLBACK);
LLMDD_SAME_VALUE(UCP_OP_ATTR_FIELD_USER_DATA);
LLMDD_SAME_VALUE(UCP_OP_ATTR_FIELD_FLAGS);
LLMDD_SAME_VALUE(UCP_FEATURE_AM);
LLMDD_SAME_VALUE(UCP_AM_SEND_FLAG_EAGER);
LLMDD_SAME_VALUE(UCP_AM_HANDLER_PARAM_FIELD_ID);
LLMDD_SAME_VALUE(UCP_AM_HANDLER_PARAM_FIELD_FLAGS);
LLMDD_SAME_VALUE(UCP_AM_HANDLER_PARAM_FIELD_CB);
LLMDD_SAME_VALUE(UCP_AM_HANDLER_PARAM_FIELD_ARG);
LLMDD_SAME_VALUE(UCP_AM_FLAG_WHOLE_MSG);
LLMDD_SAME_VALUE(UCP_AM_RECV_ATTR_FLAG_RNDV);
#undef LLMDD_SAME_VALUE

static_assert(sizeof(ours::ucs_status_t) == sizeof(::ucs_status_t), "ucs_status_t is one byte");
static_assert(sizeof(ours::UcsCpuSet) == sizeof(::ucs_cpu_set_t), "ucs_cpu_set_t");

#define LLMDD_SAME_FIELD(our_type, their_type, field)                                   \
  static_assert(offsetof(ours::our_type, field) == offsetof(::their_type, field) &&     \
                    sizeof(ours::our_type::field) == sizeof(::their_type::field),       \
                #their_type "." #field " differs from ucp.h")
LLMDD_SAME_FIELD(UcpParams, ucp_params_t, field_mask);
LLMDD_SAME_FIELD(UcpParams, ucp_params_t, features);
LLMDD_SAME_FIELD(UcpWorkerParams, ucp_worker_params_t, field_mask);
LLMDD_SAME_FIELD(UcpWorkerParams, ucp_worker_params_t, thread_mode);
LLMDD_SAME_FIELD(UcpWorkerParams, ucp_worker_params_t, cpu_mask);
LLMDD_SAME_FIELD(UcpWorkerParams, ucp_worker_params_t, events);
LLMDD_SAME_FIELD(UcpEpParams, ucp_ep_params_t, field_mask);
LLMDD_SAME_FIELD(UcpEpParams, ucp_ep_params_t, address);
LLMDD_SAME_FIELD(UcpEpParams, ucp_ep_params_t, err_mode);
LLMDD_SAME_FIELD(UcpEpParams, ucp_ep_params_t, err_handler);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, field_mask);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, address);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, length);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, flags);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, prot);
LLMDD_SAME_FIELD(UcpMemMapParams, ucp_mem_map_params_t, memory_type);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, op_attr_mask);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, flags);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, request);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, cb);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, datatype);
LLMDD_SAME_FIELD(UcpRequestParam, ucp_request_param_t, user_data);
LLMDD_SAME_FIELD(UcpAmHandlerParam, ucp_am_handler_param_t, field_mask);
LLMDD_SAME_FIELD(UcpAmHandlerParam, ucp_am_handler_param_t, id);
LLMDD_SAME_FIELD(UcpAmHandlerParam, ucp_am_handler_param_t, flags);
LLMDD_SAME_FIELD(UcpAmHandlerParam, ucp_am_handler_param_t, cb);
LLMDD_SAME_FIELD(UcpAmHandlerParam, ucp_am_handler_param_t, arg);
LLMDD_SAME_FIELD(UcpAmRecvParam, ucp_am_recv_param_t, recv_attr);
LLMDD_SAME_FIELD(UcpAmRecvParam, ucp_am_recv_param_t, reply_ep);
#undef LLMDD_SAME_FIELD
static_assert(offsetof(ours::UcpErrHandler, arg) == offsetof(::ucp_err_handler_t, arg), "");
static_assert(sizeof(ours::UcpErrHandler) == sizeof(::ucp_err_handler_t), "");

// Function pointer types, where no UCX type appears in them (elsewhere ours differ by design:
// our opaque handle types and int8_t for the packed ucs_status_t enum).
static_assert(std::is_same<decltype(ours::UcpApi::ucp_rkey_buffer_release),
                           decltype(&::ucp_rkey_buffer_release)>::value, "");
static_assert(std::is_same<decltype(ours::UcpApi::ucp_get_version),
                           decltype(&::ucp_get_version)>::value, "");
static_assert(std::is_same<decltype(ours::UcpApi::ucp_get_version_string),
                           decltype(&::ucp_get_version_string)>::value, "");
#endif

LLMDD_TEST(UcpAbi, DeclarationsMatchTheHeaders) {
#ifdef LLMDD_HAVE_UCX_HEADERS
  std::cout << "  checked at compile time against UCX " << UCP_API_MAJOR << "." << UCP_API_MINOR
            << " headers\n";
#else
  std::cout << "  skipped: UCX headers not installed (libucx-dev)\n";
#endif
}
