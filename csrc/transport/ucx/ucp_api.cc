// SPDX-License-Identifier: Apache-2.0
#include "transport/ucx/ucp_api.h"

#include <dlfcn.h>

#include <cstring>
#include <mutex>
#include <set>
#include <sstream>

#include "common/shared_library.h"

namespace llm_datadist::ucx {
namespace {

struct LoadState {
  UcpApi api{};
  bool available = false;
  std::string why_not;
  std::string library_path;
  std::string version;
};

// The names UCX gives the status codes (ucs_status_string's text is prose, not the name).
const char *UcsName(ucs_status_t s) {
  switch (s) {
    case UCS_OK: return "UCS_OK";
    case UCS_INPROGRESS: return "UCS_INPROGRESS";
    case UCS_ERR_NO_MESSAGE: return "UCS_ERR_NO_MESSAGE";
    case UCS_ERR_NO_RESOURCE: return "UCS_ERR_NO_RESOURCE";
    case UCS_ERR_IO_ERROR: return "UCS_ERR_IO_ERROR";
    case UCS_ERR_NO_MEMORY: return "UCS_ERR_NO_MEMORY";
    case UCS_ERR_INVALID_PARAM: return "UCS_ERR_INVALID_PARAM";
    case UCS_ERR_UNREACHABLE: return "UCS_ERR_UNREACHABLE";
    case UCS_ERR_INVALID_ADDR: return "UCS_ERR_INVALID_ADDR";
    case UCS_ERR_NOT_IMPLEMENTED: return "UCS_ERR_NOT_IMPLEMENTED";
    case UCS_ERR_BUSY: return "UCS_ERR_BUSY";
    case UCS_ERR_CANCELED: return "UCS_ERR_CANCELED";
    case UCS_ERR_TIMED_OUT: return "UCS_ERR_TIMED_OUT";
    case UCS_ERR_UNSUPPORTED: return "UCS_ERR_UNSUPPORTED";
    case UCS_ERR_REJECTED: return "UCS_ERR_REJECTED";
    case UCS_ERR_NOT_CONNECTED: return "UCS_ERR_NOT_CONNECTED";
    case UCS_ERR_CONNECTION_RESET: return "UCS_ERR_CONNECTION_RESET";
    case -80: return "UCS_ERR_ENDPOINT_TIMEOUT";
    default: return "UCS_ERR";
  }
}

template <typename Fn>
void Resolve(void *handle, const char *name, Fn *out) {
  // The handle's lookup scope covers libucp's dependencies (ucs_status_string is libucs's).
  *out = reinterpret_cast<Fn>(dlsym(handle, name));
}

#define LLMDD_UCP_SYMBOLS(X)                                                                    \
  X(ucp_get_version) X(ucp_get_version_string) X(ucp_config_read) X(ucp_config_release)        \
  X(ucp_config_modify)                                                                         \
  X(ucp_init_version) X(ucp_cleanup) X(ucp_context_print_info) X(ucp_worker_create)             \
  X(ucp_worker_destroy) X(ucp_worker_get_address) X(ucp_worker_release_address)                 \
  X(ucp_worker_progress) X(ucp_worker_get_efd) X(ucp_worker_arm) X(ucp_ep_create)              \
  X(ucp_ep_close_nbx) X(ucp_ep_flush_nbx) X(ucp_mem_map) X(ucp_mem_unmap) X(ucp_rkey_pack)     \
  X(ucp_rkey_buffer_release) X(ucp_ep_rkey_unpack) X(ucp_rkey_destroy) X(ucp_get_nbx)          \
  X(ucp_put_nbx) X(ucp_request_check_status) X(ucp_request_free) X(ucs_status_string)          \
  X(ucp_worker_set_am_recv_handler) X(ucp_am_send_nbx)

void Load(LoadState *state) {
  // RTLD_LOCAL: nothing else in the process should bind to this UCX by accident (a second
  // UCX, e.g. NIXL's, may be loaded next to it).
  const OpenedLibrary lib = OpenSharedLibrary("LLMDD_UCX_LIBRARY", {"libucp.so.0", "libucp.so"}, RTLD_NOW | RTLD_LOCAL);
  void *handle = lib.handle;
  if (handle == nullptr) {
    state->why_not = lib.from_env ? detail::Concat("cannot load UCX LLMDD_UCX_LIBRARY=", lib.env_value, ": ", lib.errors)
                                  : detail::Concat("cannot load UCX (libucp not installed?): ", lib.errors);
    return;
  }
  state->library_path = !lib.loaded_path.empty() ? lib.loaded_path : lib.from_env ? lib.env_value : "libucp.so.0";

  UcpApi &api = state->api;
  std::string missing;
#define LLMDD_RESOLVE(name)                \
  Resolve(handle, #name, &api.name);       \
  if (api.name == nullptr) {               \
    if (!missing.empty()) missing += ", "; \
    missing += #name;                      \
  }
  LLMDD_UCP_SYMBOLS(LLMDD_RESOLVE)
#undef LLMDD_RESOLVE
  if (!missing.empty()) {
    state->why_not = detail::Concat("the UCX library ", state->library_path,
                                    " lacks required symbols: ", missing,
                                    " (not libucp, or older than UCX ", kUcpApiMajor, ".",
                                    kUcpApiMinor, ")");
    return;
  }
  unsigned major = 0, minor = 0, release = 0;
  api.ucp_get_version(&major, &minor, &release);
  state->version = detail::Concat(major, ".", minor, ".", release);
  if (major != kUcpApiMajor || minor < kUcpApiMinor) {
    state->why_not = detail::Concat("UCX ", state->version, " at ", state->library_path,
                                    " is too old (need ", kUcpApiMajor, ".", kUcpApiMinor,
                                    " or newer 1.x)");
    return;
  }
  state->available = true;
}

LoadState &State() {
  static LoadState state;
  static std::once_flag once;
  std::call_once(once, [] { Load(&state); });
  return state;
}

// "#      resource 1  :  md 1  dev 1  flags -- tcp/lo" -> "tcp/lo", from
// ucp_context_print_info's text (UCX has no query for a context's resources before 1.16).
std::vector<std::string> ParseResources(const std::string &text) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.find(" resource ") == std::string::npos) continue;
    const size_t dashes = line.rfind("-- ");
    if (dashes == std::string::npos) continue;
    std::string name = line.substr(dashes + 3);
    while (!name.empty() && (name.back() == ' ' || name.back() == '\r')) name.pop_back();
    if (!name.empty() && seen.insert(name).second) out.push_back(name);
  }
  return out;
}

UcxInfo ComputeInfo() {
  UcxInfo info;
  std::string why_not;
  const UcpApi *api = Api(&why_not);
  const LoadState &state = State();
  info.library_path = state.library_path;
  info.version = state.version;
  if (api == nullptr) {
    info.reason = why_not;
    return info;
  }
  ucp_config_t *config = nullptr;
  ucs_status_t s = api->ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) {
    info.reason = "ucp_config_read failed: " + DescribeUcs(s);
    return info;
  }
  UcpParams params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA;
  ucp_context_h context = nullptr;
  s = api->ucp_init_version(kUcpApiMajor, kUcpApiMinor, &params, config, &context);
  api->ucp_config_release(config);
  if (s != UCS_OK) {
    info.reason = "ucp_init failed (no usable transport under this UCX_* environment?): " +
                  DescribeUcs(s);
    return info;
  }
  char *text = nullptr;
  size_t text_len = 0;
  FILE *stream = open_memstream(&text, &text_len);
  if (stream != nullptr) {
    api->ucp_context_print_info(context, stream);
    std::fclose(stream);
    info.transports = ParseResources(std::string(text, text_len));
    std::free(text);
  }
  api->ucp_cleanup(context);
  info.available = true;
  return info;
}

}  // namespace

const UcpApi *Api(std::string *why_not) {
  const LoadState &state = State();
  if (!state.available) {
    if (why_not != nullptr) *why_not = state.why_not;
    return nullptr;
  }
  return &state.api;
}

UcxInfo Probe() {
  static const UcxInfo info = ComputeInfo();
  return info;
}

std::string DescribeUcs(ucs_status_t status) {
  const UcpApi *api = Api();
  const char *text = api != nullptr ? api->ucs_status_string(status) : nullptr;
  return detail::Concat(UcsName(status), " (", static_cast<int>(status),
                        "): ", text != nullptr ? text : "unknown");
}

DetailedStatus CheckUcs(ucs_status_t status, const char *call) {
  if (status == UCS_OK) return DetailedStatus::Ok();
  Status code = LLM_FAILED;
  switch (status) {
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_IO_ERROR:
      code = LLM_LINK_FAILED;
      break;
    case UCS_ERR_TIMED_OUT:
      code = LLM_TIMEOUT;
      break;
    case UCS_ERR_NO_MEMORY:
      code = LLM_OUT_OF_MEMORY;
      break;
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NOT_IMPLEMENTED:
      code = LLM_FEATURE_NOT_ENABLED;
      break;
    default:
      // UCS groups link and endpoint failures (endpoint timeout among them) in one range.
      if (status <= UCS_ERR_FIRST_LINK_FAILURE && status >= UCS_ERR_LAST_ENDPOINT_FAILURE) {
        code = LLM_LINK_FAILED;
      }
      break;
  }
  DetailedStatus out(code, detail::Concat(call, " failed: ", DescribeUcs(status)));
  out.With("ucx_call", call).With("ucx_status", static_cast<int>(status));
  return out;
}

}  // namespace llm_datadist::ucx
