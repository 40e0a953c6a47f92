// SPDX-License-Identifier: Apache-2.0
#include "common/cuda_driver.h"

#include <dlfcn.h>

#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#include "common/shared_library.h"

namespace llm_datadist::cuda {
namespace {

// ---- CUresult -> status: the one table ----
// Rows only for codes that need more than the default (LLM_FAILED, not sticky), plus a few common
// ones so that messages stay readable when the driver cannot name a code itself (it is missing,
// or it predates the code). `sticky` follows cuda.h's doc comments ("the process must be
// terminated and relaunched"): 226, 700, 702, 710, 714..719, 721, 810, 911. ECC (214) is not
// documented sticky, but it means the data is gone, hence its own code.
struct CudaErrorRow {
  CUresult code;
  const char *name;
  const char *text;  // fallback for cuGetErrorString
  Status status;
  bool sticky;
};

constexpr CudaErrorRow kCudaErrors[] = {
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument", LLM_FAILED, false},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory", LLM_DEVICE_OUT_OF_MEMORY, false},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error", LLM_FAILED, false},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down", LLM_FAILED, false},
    {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library", LLM_FAILED, false},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected", LLM_FAILED, false},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal", LLM_FAILED, false},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context", LLM_FAILED, false},
    {214, "CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered",
     LLM_DEVICE_MEM_ERROR, false},
    {226, "CUDA_ERROR_CONTAINED", "hardware error contained", LLM_FAILED, true},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered", LLM_FAILED,
     true},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated", LLM_FAILED,
     true},
    {710, "CUDA_ERROR_ASSERT", "device-side assert triggered", LLM_FAILED, true},
    {714, "CUDA_ERROR_HARDWARE_STACK_ERROR", "hardware stack error", LLM_FAILED, true},
    {715, "CUDA_ERROR_ILLEGAL_INSTRUCTION", "an illegal instruction was encountered", LLM_FAILED,
     true},
    {716, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address", LLM_FAILED, true},
    {717, "CUDA_ERROR_INVALID_ADDRESS_SPACE",
     "operation not supported on global/shared address space", LLM_FAILED, true},
    {718, "CUDA_ERROR_INVALID_PC", "invalid program counter", LLM_FAILED, true},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure", LLM_FAILED, true},
    {721, "CUDA_ERROR_TENSOR_MEMORY_LEAK", "tensor memory not completely freed", LLM_FAILED,
     true},
    {810, "CUDA_ERROR_MPS_CLIENT_TERMINATED", "the MPS client has been terminated by the server",
     LLM_FAILED, true},
    {911, "CUDA_ERROR_EXTERNAL_DEVICE", "error in an external device", LLM_FAILED, true},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error", LLM_FAILED, false},
};

const CudaErrorRow *FindCudaError(CUresult code) {
  for (const CudaErrorRow &row : kCudaErrors) {
    if (row.code == code) return &row;
  }
  return nullptr;
}

// "CUDA_ERROR_XXX (N): text", from the driver when it knows the code, else from the table.
// `api` may be null or partly loaded.
std::string DescribeCuResult(const DriverApi *api, CUresult code) {
  const CudaErrorRow *row = FindCudaError(code);
  const char *name = nullptr;
  const char *text = nullptr;
  if (api != nullptr && api->cuGetErrorName != nullptr &&
      api->cuGetErrorName(code, &name) != kCudaSuccess) {
    name = nullptr;
  }
  if (api != nullptr && api->cuGetErrorString != nullptr &&
      api->cuGetErrorString(code, &text) != kCudaSuccess) {
    text = nullptr;
  }
  if (name == nullptr) name = row != nullptr ? row->name : "CUDA_ERROR_UNRECOGNIZED";
  if (text == nullptr) text = row != nullptr ? row->text : "unrecognized error code";
  return detail::Concat(name, " (", code, "): ", text);
}

std::string ErrorName(const DriverApi *api, CUresult code) {
  const char *name = nullptr;
  if (api != nullptr && api->cuGetErrorName != nullptr &&
      api->cuGetErrorName(code, &name) == kCudaSuccess && name != nullptr) {
    return name;
  }
  const CudaErrorRow *row = FindCudaError(code);
  return row != nullptr ? row->name : "CUDA_ERROR_UNRECOGNIZED";
}

// ---- Loading ----

struct LoadState {
  DriverApi api{};
  bool available = false;
  bool symbols_ok = false;  // api is fully resolved (cuInit may still have failed)
  std::string why_not;
  std::string library_path;
  bool interposed = false;
  int device_count = 0;
};

// Resolves through the global scope first so that an LD_PRELOAD library wins, as it would for
// a program linked against libcuda; the handle is only a fallback (a library opened
// RTLD_GLOBAL is in the global scope, so the fallback should not be needed in practice).
template <typename Fn>
void Resolve(void *handle, const char *name, Fn *out) {
  void *sym = dlsym(RTLD_DEFAULT, name);
  if (sym == nullptr) sym = dlsym(handle, name);
  *out = reinterpret_cast<Fn>(sym);
}

#define LLMDD_CUDA_REQUIRED_SYMBOLS(X)                                                      \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount) X(cuDeviceGet) X(cuDeviceGetName)     \
  X(cuDeviceTotalMem_v2) X(cuDevicePrimaryCtxRetain) X(cuDevicePrimaryCtxRelease_v2)        \
  X(cuCtxSetCurrent) X(cuCtxGetCurrent) X(cuCtxSynchronize) X(cuMemAlloc_v2) X(cuMemFree_v2) \
  X(cuMemGetInfo_v2) X(cuMemcpy) X(cuMemcpyAsync) X(cuMemcpyHtoD_v2) X(cuMemcpyDtoH_v2)     \
  X(cuMemcpyDtoD_v2) X(cuMemsetD8_v2) X(cuStreamCreate) X(cuStreamDestroy_v2)               \
  X(cuStreamSynchronize) X(cuIpcGetMemHandle) X(cuIpcOpenMemHandle_v2)                      \
  X(cuIpcCloseMemHandle) X(cuPointerGetAttribute) X(cuGetErrorName) X(cuGetErrorString)

void Load(LoadState *state) {
  // RTLD_GLOBAL puts the driver in the global scope, which is what lets Resolve() use
  // RTLD_DEFAULT and still find it.
  const OpenedLibrary lib = OpenSharedLibrary("LLMDD_CUDA_LIBRARY", {"libcuda.so.1", "libcuda.so"}, RTLD_NOW | RTLD_GLOBAL);
  void *handle = lib.handle;
  if (handle == nullptr) {
    state->why_not = lib.from_env ? detail::Concat("cannot load the CUDA driver LLMDD_CUDA_LIBRARY=", lib.env_value,
                                                   ": ", lib.errors)
                                  : detail::Concat("cannot load the CUDA driver (no NVIDIA driver installed?): ",
                                                   lib.errors);
    return;
  }

  DriverApi &api = state->api;
  std::string missing;
#define LLMDD_RESOLVE(name)                      \
  Resolve(handle, #name, &api.name);             \
  if (api.name == nullptr) {                     \
    if (!missing.empty()) missing += ", ";       \
    missing += #name;                            \
  }
  LLMDD_CUDA_REQUIRED_SYMBOLS(LLMDD_RESOLVE)
#undef LLMDD_RESOLVE
  Resolve(handle, "cuMemGetAddressRange_v2", &api.cuMemGetAddressRange_v2);

  // Named by its link map (OpenSharedLibrary), not by a symbol lookup: a preloaded shim
  // intercepts dlsym(handle, ...) too, and would be reported as the driver.
  state->library_path = !lib.loaded_path.empty() ? lib.loaded_path : lib.from_env ? lib.env_value : "libcuda";
  // Interposed: the cuMemAlloc_v2 our calls reach lives in another object than the driver.
  Dl_info info{};
  state->interposed = api.cuMemAlloc_v2 != nullptr && !lib.loaded_path.empty() &&
                      dladdr(reinterpret_cast<void *>(api.cuMemAlloc_v2), &info) != 0 && info.dli_fname != nullptr &&
                      std::string(info.dli_fname) != lib.loaded_path;

  if (!missing.empty()) {
    state->why_not = detail::Concat("the CUDA driver ", state->library_path,
                                    " lacks required symbols: ", missing,
                                    " (not a CUDA driver, or one too old)");
    return;
  }
  state->symbols_ok = true;

  CUresult r = api.cuInit(0);
  if (r != kCudaSuccess) {
    state->why_not = "cuInit failed: " + DescribeCuResult(&api, r);
    return;
  }
  int count = 0;
  r = api.cuDeviceGetCount(&count);
  if (r != kCudaSuccess) {
    state->why_not = "cuDeviceGetCount failed: " + DescribeCuResult(&api, r);
    return;
  }
  if (count <= 0) {
    state->why_not = "no CUDA device visible (cuDeviceGetCount returned 0)";
    return;
  }
  state->device_count = count;
  state->available = true;
}

const LoadState &State() {
  static LoadState state;
  static std::once_flag once;
  std::call_once(once, [] { Load(&state); });
  return state;
}

DetailedStatus Unavailable(const char *what) {
  return DetailedStatus(LLM_FEATURE_NOT_ENABLED,
                        detail::Concat(what, ": CUDA is not available: ", State().why_not));
}

DetailedStatus CheckOrdinal(int ordinal) {
  const LoadState &state = State();
  LLMDD_CHECK(ordinal >= 0 && ordinal < state.device_count, LLM_PARAM_INVALID,
              "CUDA device ordinal ", ordinal, " is out of range [0, ", state.device_count, ")");
  return DetailedStatus::Ok();
}

// Per-device process-lifetime resources. Never released: a primary context released while
// other code holds allocations in it would be destroyed, and tearing down streams during
// process exit races the driver's own teardown.
struct DeviceResources {
  std::mutex mu;
  std::map<int, CUcontext> contexts;
  std::map<int, CUstream> streams;
};

DeviceResources &Resources() {
  static DeviceResources *resources = new DeviceResources();  // never destroyed, see above
  return *resources;
}

// The cached copy stream of `ordinal`; the caller has made its context current.
DetailedStatus CopyStream(int ordinal, CUstream *out) {
  DeviceResources &res = Resources();
  std::lock_guard<std::mutex> lock(res.mu);
  auto it = res.streams.find(ordinal);
  if (it != res.streams.end()) {
    *out = it->second;
    return DetailedStatus::Ok();
  }
  CUstream stream = nullptr;
  // CU_STREAM_DEFAULT (blocking): ordered after work queued on the legacy default stream.
  LLMDD_RETURN_IF_ERROR(
      CheckCu(State().api.cuStreamCreate(&stream, CU_STREAM_DEFAULT), "cuStreamCreate")
          .With("device", ordinal));
  res.streams.emplace(ordinal, stream);
  *out = stream;
  return DetailedStatus::Ok();
}

CUdeviceptr ToDevicePtr(const void *p) {
  return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p));
}

// Classifies pointers as host or device memory, remembering the device allocations it has seen
// so that a batch of block copies within a few allocations costs a few driver queries.
class PointerClassifier {
 public:
  DetailedStatus Classify(const void *ptr, int *ordinal) {
    const uintptr_t addr = reinterpret_cast<uintptr_t>(ptr);
    if (Lookup(addr, ordinal)) return DetailedStatus::Ok();
    LLMDD_RETURN_IF_ERROR(DeviceOfPointer(ptr, ordinal));
    if (*ordinal >= 0) Remember(ptr, *ordinal);
    return DetailedStatus::Ok();
  }

  // Device of a range already seen, without asking the driver; false when unknown.
  bool Lookup(uintptr_t addr, int *ordinal) const {
    auto it = ranges_.upper_bound(addr);
    if (it == ranges_.begin()) return false;
    --it;
    if (addr >= it->second.first) return false;  // past the end of that range
    *ordinal = it->second.second;
    return true;
  }

 private:
  void Remember(const void *ptr, int ordinal) {
    const DriverApi &api = State().api;
    CUdeviceptr base = 0;
    size_t size = 0;
    if (api.cuPointerGetAttribute(&base, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR,
                                  ToDevicePtr(ptr)) != kCudaSuccess ||
        api.cuPointerGetAttribute(&size, CU_POINTER_ATTRIBUTE_RANGE_SIZE, ToDevicePtr(ptr)) !=
            kCudaSuccess ||
        size == 0) {
      return;  // only an optimization
    }
    ranges_[static_cast<uintptr_t>(base)] = {static_cast<uintptr_t>(base) + size, ordinal};
  }

  std::map<uintptr_t, std::pair<uintptr_t, int>> ranges_;  // base -> (end, ordinal)
};

// The device a copy between src and dst runs on: a device owning either end, or -1 for host to
// host. The cache is consulted for both ends before the driver is asked about either.
DetailedStatus CopyDevice(PointerClassifier *classifier, const void *dst, const void *src,
                          int *ordinal) {
  if (classifier->Lookup(reinterpret_cast<uintptr_t>(src), ordinal) ||
      classifier->Lookup(reinterpret_cast<uintptr_t>(dst), ordinal)) {
    return DetailedStatus::Ok();
  }
  LLMDD_RETURN_IF_ERROR(classifier->Classify(src, ordinal));
  if (*ordinal >= 0) return DetailedStatus::Ok();
  return classifier->Classify(dst, ordinal);
}

}  // namespace

// ---- Public API ----

const DriverApi *Driver(std::string *why_not) {
  const LoadState &state = State();
  if (state.available) return &state.api;
  if (why_not != nullptr) *why_not = state.why_not;
  return nullptr;
}

CudaInfo Probe() {
  static const CudaInfo info = [] {
    const LoadState &state = State();
    CudaInfo out;
    out.available = state.available;
    out.reason = state.why_not;
    out.library_path = state.library_path;
    out.interposed = state.interposed;
    const DriverApi &api = state.api;
    // The version is known even when cuInit failed; it tells a user which driver said no.
    if (api.cuDriverGetVersion != nullptr) {
      int version = 0;
      if (api.cuDriverGetVersion(&version) == kCudaSuccess) out.driver_version = version;
    }
    if (!state.available) return out;
    out.device_count = state.device_count;
    for (int i = 0; i < state.device_count; ++i) {
      CUdevice dev = 0;
      char name[256] = {0};
      size_t total = 0;
      if (api.cuDeviceGet(&dev, i) != kCudaSuccess) dev = i;
      if (api.cuDeviceGetName(name, static_cast<int>(sizeof(name) - 1), dev) != kCudaSuccess) {
        std::strcpy(name, "unknown CUDA device");
      }
      if (api.cuDeviceTotalMem_v2(&total, dev) != kCudaSuccess) total = 0;
      out.device_names.emplace_back(name);
      out.device_total_bytes.push_back(static_cast<uint64_t>(total));
    }
    return out;
  }();
  return info;
}

bool IsStickyCudaError(CUresult result) {
  const CudaErrorRow *row = FindCudaError(result);
  return row != nullptr && row->sticky;
}

DetailedStatus CheckCu(CUresult result, const char *call) {
  if (result == kCudaSuccess) return DetailedStatus::Ok();
  const CudaErrorRow *row = FindCudaError(result);
  // The loader formats its own messages and never calls CheckCu, so State() cannot recurse
  // into its call_once here. Names come from the driver when it loaded, else from the table.
  const LoadState &state = State();
  const DriverApi *api = state.symbols_ok ? &state.api : nullptr;

  // Under the CUDA fault-injection shim (fault_injection/, LD_PRELOAD) the error may be one it
  // injected: it exports what it last injected, found once through the global scope. The XID is
  // named only when the shim's last injected code is this very error.
  using FaultQuery = int (*)();
  static const FaultQuery fault_last_xid =
      reinterpret_cast<FaultQuery>(dlsym(RTLD_DEFAULT, "llmdd_fault_last_xid"));
  static const FaultQuery fault_last_code =
      reinterpret_cast<FaultQuery>(dlsym(RTLD_DEFAULT, "llmdd_fault_last_code"));
  int xid = 0;
  if (fault_last_xid != nullptr && fault_last_code != nullptr && fault_last_code() == result) {
    xid = fault_last_xid();
  }
  std::string message = detail::Concat(call, " failed: ", DescribeCuResult(api, result));
  if (xid != 0) message += detail::Concat(" [XID ", xid, ", injected by the CUDA fault shim]");

  DetailedStatus status(row != nullptr ? row->status : LLM_FAILED, std::move(message));
  status.With("cuda_call", call).With("cuda_error", ErrorName(api, result)).With("cuda_code",
                                                                                  result);
  if (row != nullptr && row->sticky) status.With("cuda_sticky", "true");
  if (xid != 0) status.With("xid", xid).With("fault_injected", "true");

  // What the caller can do, by the kind of CUDA error; the context keys override the status
  // row's `recoverable`/`action` (LLMException honours them). A lost context (sticky codes), an
  // uncorrectable memory or NVLink error, a vanished or unknown-state device: fatal, restart the
  // process. A non-sticky failure that a later attempt can get past (busy device, launch out of
  // resources, system not ready yet, timeout): retry later. Not listed: the status row decides
  // (out of memory: free memory; anything else: LLM_FAILED, fatal).
  struct CudaRecovery {
    CUresult code;
    bool recoverable;
    const char *action;
  };
  static constexpr CudaRecovery kCudaRecovery[] = {
      {46, true, "retry_later"},   // CUDA_ERROR_DEVICE_UNAVAILABLE (busy, exclusive mode)
      {701, true, "retry_later"},  // CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES (not sticky)
      {802, true, "retry_later"},  // CUDA_ERROR_SYSTEM_NOT_READY (fabric manager starting)
      {909, true, "retry_later"},  // CUDA_ERROR_TIMEOUT
      {100, false, "fatal"},       // CUDA_ERROR_NO_DEVICE (the GPU is gone: XID 79)
      {214, false, "fatal"},       // CUDA_ERROR_ECC_UNCORRECTABLE (XID 48, 94, 95, 140)
      {220, false, "fatal"},       // CUDA_ERROR_NVLINK_UNCORRECTABLE (XID 74)
      {999, false, "fatal"},       // CUDA_ERROR_UNKNOWN (XID 79 while running, GSP errors)
  };
  if (row != nullptr && row->sticky) {
    status.With("recoverable", "false").With("action", "fatal");
  } else {
    for (const CudaRecovery &recovery : kCudaRecovery) {
      if (recovery.code != result) continue;
      status.With("recoverable", recovery.recoverable ? "true" : "false")
          .With("action", recovery.action);
      break;
    }
  }
  return status;
}

DetailedStatus PrimaryContext(int ordinal, CUcontext *out) {
  if (!State().available) return Unavailable("PrimaryContext");
  LLMDD_RETURN_IF_ERROR(CheckOrdinal(ordinal));
  DeviceResources &res = Resources();
  std::lock_guard<std::mutex> lock(res.mu);
  auto it = res.contexts.find(ordinal);
  if (it != res.contexts.end()) {
    *out = it->second;
    return DetailedStatus::Ok();
  }
  const DriverApi &api = State().api;
  CUdevice dev = 0;
  LLMDD_RETURN_IF_ERROR(CheckCu(api.cuDeviceGet(&dev, ordinal), "cuDeviceGet").With("device",
                                                                                     ordinal));
  CUcontext ctx = nullptr;
  LLMDD_RETURN_IF_ERROR(CheckCu(api.cuDevicePrimaryCtxRetain(&ctx, dev),
                                "cuDevicePrimaryCtxRetain")
                            .With("device", ordinal));
  res.contexts.emplace(ordinal, ctx);
  *out = ctx;
  return DetailedStatus::Ok();
}

DetailedStatus ScopedDeviceContext::Enter(int ordinal, std::optional<ScopedDeviceContext> *out) {
  out->reset();
  CUcontext ctx = nullptr;
  LLMDD_RETURN_IF_ERROR(PrimaryContext(ordinal, &ctx));
  const DriverApi &api = State().api;
  CUcontext previous = nullptr;
  LLMDD_RETURN_IF_ERROR(CheckCu(api.cuCtxGetCurrent(&previous), "cuCtxGetCurrent"));
  if (previous == ctx) {
    out->emplace(ScopedDeviceContext(ordinal, ctx, previous, /*restore=*/false));
    return DetailedStatus::Ok();
  }
  LLMDD_RETURN_IF_ERROR(
      CheckCu(api.cuCtxSetCurrent(ctx), "cuCtxSetCurrent").With("device", ordinal));
  out->emplace(ScopedDeviceContext(ordinal, ctx, previous, /*restore=*/true));
  return DetailedStatus::Ok();
}

ScopedDeviceContext::ScopedDeviceContext(ScopedDeviceContext &&other) noexcept
    : ordinal_(other.ordinal_),
      context_(other.context_),
      previous_(other.previous_),
      restore_(other.restore_) {
  other.restore_ = false;
}

ScopedDeviceContext::~ScopedDeviceContext() {
  // Nothing useful to do with a failure here; a broken driver reports it on the next call.
  if (restore_) (void)State().api.cuCtxSetCurrent(previous_);
}

DetailedStatus DeviceOfPointer(const void *ptr, int *ordinal) {
  *ordinal = -1;
  if (!State().available) return Unavailable("DeviceOfPointer");
  const DriverApi &api = State().api;
  unsigned int memory_type = 0;
  CUresult r = api.cuPointerGetAttribute(&memory_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                         ToDevicePtr(ptr));
  if (r == 201) {  // CUDA_ERROR_INVALID_CONTEXT: some drivers want a current context here
    std::optional<ScopedDeviceContext> ctx;
    LLMDD_RETURN_IF_ERROR(ScopedDeviceContext::Enter(0, &ctx));
    r = api.cuPointerGetAttribute(&memory_type, CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                                  ToDevicePtr(ptr));
  }
  if (r == kCudaErrorInvalidValue) return DetailedStatus::Ok();  // memory CUDA does not know
  LLMDD_RETURN_IF_ERROR(CheckCu(r, "cuPointerGetAttribute(MEMORY_TYPE)"));
  if (memory_type != CU_MEMORYTYPE_DEVICE && memory_type != CU_MEMORYTYPE_UNIFIED) {
    return DetailedStatus::Ok();  // pinned host memory: host-accessible
  }
  int device = -1;
  LLMDD_RETURN_IF_ERROR(CheckCu(
      api.cuPointerGetAttribute(&device, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, ToDevicePtr(ptr)),
      "cuPointerGetAttribute(DEVICE_ORDINAL)"));
  *ordinal = device;
  return DetailedStatus::Ok();
}

DetailedStatus DeviceAlloc(int ordinal, size_t bytes, CUdeviceptr *out) {
  *out = 0;
  if (!State().available) return Unavailable("DeviceAlloc");
  LLMDD_CHECK(bytes > 0, LLM_PARAM_INVALID, "DeviceAlloc: bytes must be > 0");
  std::optional<ScopedDeviceContext> ctx;
  LLMDD_RETURN_IF_ERROR(ScopedDeviceContext::Enter(ordinal, &ctx));
  return CheckCu(State().api.cuMemAlloc_v2(out, bytes), "cuMemAlloc")
      .With("device", ordinal)
      .With("bytes", bytes);
}

DetailedStatus DeviceFree(int ordinal, CUdeviceptr p) {
  if (p == 0) return DetailedStatus::Ok();
  if (!State().available) return Unavailable("DeviceFree");
  std::optional<ScopedDeviceContext> ctx;
  LLMDD_RETURN_IF_ERROR(ScopedDeviceContext::Enter(ordinal, &ctx));
  return CheckCu(State().api.cuMemFree_v2(p), "cuMemFree").With("device", ordinal);
}

DetailedStatus Memcpy(void *dst, const void *src, size_t n) {
  if (!State().available) return Unavailable("Memcpy");
  if (n == 0) return DetailedStatus::Ok();
  PointerClassifier classifier;
  int ordinal = -1;
  LLMDD_RETURN_IF_ERROR(CopyDevice(&classifier, dst, src, &ordinal));
  if (ordinal < 0) {
    std::memcpy(dst, src, n);
    return DetailedStatus::Ok();
  }
  std::optional<ScopedDeviceContext> ctx;
  LLMDD_RETURN_IF_ERROR(ScopedDeviceContext::Enter(ordinal, &ctx));
  return CheckCu(State().api.cuMemcpy(ToDevicePtr(dst), ToDevicePtr(src), n), "cuMemcpy")
      .With("device", ordinal)
      .With("bytes", n);
}

DetailedStatus MemcpyBatch(const std::vector<CopyRegion> &regions) {
  if (!State().available) return Unavailable("MemcpyBatch");
  const DriverApi &api = State().api;

  // Pass 1: classify, copy host-to-host regions right away, group the rest by device.
  PointerClassifier classifier;
  std::map<int, std::vector<size_t>> by_device;
  for (size_t i = 0; i < regions.size(); ++i) {
    const CopyRegion &region = regions[i];
    if (region.bytes == 0) continue;
    int ordinal = -1;
    LLMDD_RETURN_IF_ERROR(
        CopyDevice(&classifier, region.dst, region.src, &ordinal).With("region", i));
    if (ordinal < 0) {
      std::memcpy(region.dst, region.src, region.bytes);
    } else {
      by_device[ordinal].push_back(i);
    }
  }

  // Pass 2: issue per device; pass 3: wait once per stream used. A failure while issuing stops
  // issuing but still waits for what was issued, so no copy is in flight when we return.
  DetailedStatus first_error;
  std::vector<std::pair<int, CUstream>> issued;
  for (const auto &[ordinal, indices] : by_device) {
    std::optional<ScopedDeviceContext> ctx;
    DetailedStatus s = ScopedDeviceContext::Enter(ordinal, &ctx);
    CUstream stream = nullptr;
    if (s.ok()) s = CopyStream(ordinal, &stream);
    if (!s.ok()) {
      first_error = std::move(s);
      break;
    }
    issued.emplace_back(ordinal, stream);
    for (size_t i : indices) {
      const CopyRegion &region = regions[i];
      CUresult r = api.cuMemcpyAsync(ToDevicePtr(region.dst), ToDevicePtr(region.src),
                                     region.bytes, stream);
      if (r != kCudaSuccess) {
        first_error = CheckCu(r, "cuMemcpyAsync")
                          .With("device", ordinal)
                          .With("region", i)
                          .With("bytes", region.bytes);
        break;
      }
    }
    if (!first_error.ok()) break;
  }
  for (const auto &[ordinal, stream] : issued) {
    std::optional<ScopedDeviceContext> ctx;
    DetailedStatus s = ScopedDeviceContext::Enter(ordinal, &ctx);
    if (s.ok()) {
      s = CheckCu(api.cuStreamSynchronize(stream), "cuStreamSynchronize").With("device", ordinal);
    }
    if (!s.ok() && first_error.ok()) first_error = std::move(s);
  }
  return first_error;
}

}  // namespace llm_datadist::cuda
