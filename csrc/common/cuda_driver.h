// SPDX-License-Identifier: Apache-2.0
// The CUDA driver API, loaded at run time.
//
// The build needs no CUDA toolkit: this header declares the handful of driver types and
// constants the core uses (values checked against CUDA 13.0's cuda.h) and Driver() dlopens
// libcuda when first asked. Every symbol is resolved through the global scope
// (dlsym(RTLD_DEFAULT, ...)), so an LD_PRELOAD shim such as our fault injector sits in front
// of the core's own CUDA calls (see docs: reference/cuda_fault_injection.md, pitfall 5.3).
//
// Environment:
//   LLMDD_CUDA_LIBRARY  path of the driver library to load instead of libcuda.so.1 /
//                       libcuda.so (tests point it at fault_injection/fake_cuda).
//
// A host without a usable driver (no library, a missing symbol, cuInit failing, no device)
// is an ordinary state, not an error: Driver() returns nullptr with the reason, Probe() says
// available == false, and every helper below returns LLM_FEATURE_NOT_ENABLED naming the reason.
//
// Thread-safety: loading happens once (std::call_once); everything here may be called from any
// thread. The driver's current context is per thread, which ScopedDeviceContext handles.
#ifndef LLM_DATADIST_COMMON_CUDA_DRIVER_H_
#define LLM_DATADIST_COMMON_CUDA_DRIVER_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist::cuda {

// ---- Minimal driver API declarations (ABI-compatible with cuda.h on 64-bit Linux) ----
using CUresult = int;
using CUdevice = int;
using CUdeviceptr = unsigned long long;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
struct CUipcMemHandle {
  char reserved[64];  // CU_IPC_HANDLE_SIZE
};
static_assert(sizeof(CUipcMemHandle) == 64, "CUipcMemHandle is passed by value: must match");

// CUresult values the core names.
constexpr CUresult kCudaSuccess = 0;
constexpr CUresult kCudaErrorInvalidValue = 1;
constexpr CUresult kCudaErrorOutOfMemory = 2;
constexpr CUresult kCudaErrorNoDevice = 100;
constexpr CUresult kCudaErrorEccUncorrectable = 214;

// CUpointer_attribute (an enum in cuda.h; passed as int, which is its ABI).
constexpr int CU_POINTER_ATTRIBUTE_CONTEXT = 1;
constexpr int CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2;
constexpr int CU_POINTER_ATTRIBUTE_DEVICE_POINTER = 3;
constexpr int CU_POINTER_ATTRIBUTE_HOST_POINTER = 4;
constexpr int CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9;
constexpr int CU_POINTER_ATTRIBUTE_RANGE_START_ADDR = 11;
constexpr int CU_POINTER_ATTRIBUTE_RANGE_SIZE = 12;
constexpr int CU_POINTER_ATTRIBUTE_MAPPED = 13;

// CUmemorytype.
constexpr unsigned int CU_MEMORYTYPE_HOST = 1;
constexpr unsigned int CU_MEMORYTYPE_DEVICE = 2;
constexpr unsigned int CU_MEMORYTYPE_ARRAY = 3;
constexpr unsigned int CU_MEMORYTYPE_UNIFIED = 4;

// CUipcMem_flags / CUstream_flags.
constexpr unsigned int CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1;
constexpr unsigned int CU_STREAM_DEFAULT = 0;
constexpr unsigned int CU_STREAM_NON_BLOCKING = 1;

// Function pointers of the driver, under the *versioned* names libcuda exports (cuda.h maps
// e.g. cuMemAlloc to cuMemAlloc_v2; the unversioned names are the 32-bit-size legacy ABI).
struct DriverApi {
  CUresult (*cuInit)(unsigned int flags);
  CUresult (*cuDriverGetVersion)(int *version);
  CUresult (*cuDeviceGetCount)(int *count);
  CUresult (*cuDeviceGet)(CUdevice *device, int ordinal);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice dev);
  CUresult (*cuDeviceTotalMem_v2)(size_t *bytes, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *pctx, CUdevice dev);
  CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice dev);
  CUresult (*cuCtxSetCurrent)(CUcontext ctx);
  CUresult (*cuCtxGetCurrent)(CUcontext *pctx);
  CUresult (*cuCtxSynchronize)();
  CUresult (*cuMemAlloc_v2)(CUdeviceptr *dptr, size_t bytesize);
  CUresult (*cuMemFree_v2)(CUdeviceptr dptr);
  CUresult (*cuMemGetInfo_v2)(size_t *free_bytes, size_t *total_bytes);
  CUresult (*cuMemcpy)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemcpyAsync)(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream stream);
  CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr dst, const void *src, size_t bytes);
  CUresult (*cuMemcpyDtoH_v2)(void *dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemcpyDtoD_v2)(CUdeviceptr dst, CUdeviceptr src, size_t bytes);
  CUresult (*cuMemsetD8_v2)(CUdeviceptr dst, unsigned char value, size_t n);
  CUresult (*cuStreamCreate)(CUstream *stream, unsigned int flags);
  CUresult (*cuStreamDestroy_v2)(CUstream stream);
  CUresult (*cuStreamSynchronize)(CUstream stream);
  CUresult (*cuIpcGetMemHandle)(CUipcMemHandle *handle, CUdeviceptr dptr);
  CUresult (*cuIpcOpenMemHandle_v2)(CUdeviceptr *dptr, CUipcMemHandle handle, unsigned int flags);
  CUresult (*cuIpcCloseMemHandle)(CUdeviceptr dptr);
  CUresult (*cuPointerGetAttribute)(void *data, int attribute, CUdeviceptr ptr);
  CUresult (*cuGetErrorName)(CUresult error, const char **name);
  CUresult (*cuGetErrorString)(CUresult error, const char **text);
  // Optional (nullptr when the library lacks it): not needed for the core to work.
  CUresult (*cuMemGetAddressRange_v2)(CUdeviceptr *base, size_t *size, CUdeviceptr dptr);
};

// The loaded driver, or nullptr when CUDA is unusable here; then *why_not (when given) says why
// ("cannot load the CUDA driver ...: libcuda.so.1: cannot open shared object file...",
// "the CUDA driver <path> lacks required symbols: cuMemAlloc_v2, ...", "cuInit failed:
// CUDA_ERROR_NO_DEVICE (100): ...", "no CUDA device visible ..."). Loads on the first call only;
// later calls return the same answer. Never prints, never aborts. The library is never closed.
// Caveat: resolution goes through the global scope, so if another libcuda is already loaded
// RTLD_GLOBAL when LLMDD_CUDA_LIBRARY names a different one, the first one's symbols win (and
// CudaInfo::interposed reports it).
const DriverApi *Driver(std::string *why_not = nullptr);

// What Probe() found. Fields past `reason` are filled as far as loading got.
struct CudaInfo {
  bool available = false;
  std::string reason;        // empty when available
  std::string library_path;  // the driver library actually loaded (dladdr of its cuInit)
  // True when the cuMemAlloc_v2 the core calls is not the loaded library's own, i.e. an
  // LD_PRELOAD shim (or an earlier RTLD_GLOBAL library) is in front of it.
  bool interposed = false;
  int driver_version = 0;  // cuDriverGetVersion, e.g. 13000
  int device_count = 0;
  std::vector<std::string> device_names;
  std::vector<uint64_t> device_total_bytes;
};

// Loads the driver if needed and describes it. Computed once; later calls copy the cached value.
CudaInfo Probe();

// Maps a CUresult to the library's status. 0 -> ok; 2 (out of memory) ->
// LLM_DEVICE_OUT_OF_MEMORY; 214 (uncorrectable ECC) -> LLM_DEVICE_MEM_ERROR; anything else ->
// LLM_FAILED. Message: "<call> failed: CUDA_ERROR_XXX (N): <driver's description>"; context
// cuda_call, cuda_error, cuda_code, and cuda_sticky=true for errors that leave the CUDA context
// unusable (the process must be restarted to use CUDA again).
DetailedStatus CheckCu(CUresult result, const char *call);

// True for the codes cuda.h documents as sticky (226, 700, 702, 710, 714..719, 721, 810, 911).
bool IsStickyCudaError(CUresult result);

// Makes device `ordinal`'s primary context current on this thread for the scope and restores
// the previous context (possibly none) on destruction. The primary context is retained on first
// use and stays retained for the life of the process (releasing it would destroy allocations
// other code still uses). Usage:
//   std::optional<ScopedDeviceContext> ctx;
//   LLMDD_RETURN_IF_ERROR(ScopedDeviceContext::Enter(ordinal, &ctx));
//   ... driver calls on device `ordinal` ...
// Not copyable; movable (the moved-from object restores nothing).
class ScopedDeviceContext {
 public:
  // On success *out holds the scope; on failure *out is left empty. Fails with
  // LLM_FEATURE_NOT_ENABLED when CUDA is unavailable and LLM_PARAM_INVALID for a bad ordinal.
  static DetailedStatus Enter(int ordinal, std::optional<ScopedDeviceContext> *out);

  ScopedDeviceContext(const ScopedDeviceContext &) = delete;
  ScopedDeviceContext &operator=(const ScopedDeviceContext &) = delete;
  ScopedDeviceContext(ScopedDeviceContext &&other) noexcept;
  ScopedDeviceContext &operator=(ScopedDeviceContext &&other) = delete;
  ~ScopedDeviceContext();

  int ordinal() const { return ordinal_; }
  CUcontext context() const { return context_; }

 private:
  ScopedDeviceContext(int ordinal, CUcontext context, CUcontext previous, bool restore)
      : ordinal_(ordinal), context_(context), previous_(previous), restore_(restore) {}

  int ordinal_;
  CUcontext context_;
  CUcontext previous_;
  bool restore_;  // false when the context was already current (nothing to undo)
};

// The retained primary context of device `ordinal` (retaining it on first use).
DetailedStatus PrimaryContext(int ordinal, CUcontext *out);

// Sets *ordinal to the CUDA device owning `ptr`, or to -1 for host memory (pinned, or any
// pointer the driver answers CUDA_ERROR_INVALID_VALUE for, i.e. pageable memory). Any other
// driver error is returned as is: guessing "host" then would let a caller touch device memory
// from the CPU.
DetailedStatus DeviceOfPointer(const void *ptr, int *ordinal);

// cuMemAlloc on device `ordinal`. bytes must be > 0.
DetailedStatus DeviceAlloc(int ordinal, size_t bytes, CUdeviceptr *out);
// cuMemFree of a pointer DeviceAlloc returned on device `ordinal`; 0 is a no-op.
DetailedStatus DeviceFree(int ordinal, CUdeviceptr p);

// Synchronous copy of n bytes between any two of host memory and device memory: cuMemcpy with
// unified addressing (the driver works out the direction), in the context of a device owning
// src or dst; host to host is a plain memcpy. n == 0 is a no-op. Needs the driver
// (LLM_FEATURE_NOT_ENABLED otherwise), whatever the pointers.
DetailedStatus Memcpy(void *dst, const void *src, size_t n);

struct CopyRegion {
  void *dst;
  const void *src;
  size_t bytes;
};

// Issues every region as cuMemcpyAsync on a stream per device (created on first use and cached
// for the process, blocking with respect to the legacy default stream so that work a framework
// queued there is ordered before the copy), then synchronizes each stream used once. A region
// runs on the stream of a device owning its src or dst; regions with host memory at both ends
// are plain memcpy. Returns the first failure (the remaining regions are not issued; issued ones
// are still waited for). Zero-byte regions are skipped. Destinations must not overlap.
DetailedStatus MemcpyBatch(const std::vector<CopyRegion> &regions);

}  // namespace llm_datadist::cuda

#endif  // LLM_DATADIST_COMMON_CUDA_DRIVER_H_
