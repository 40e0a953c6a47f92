// SPDX-License-Identifier: Apache-2.0
// A fake CUDA runtime (libcudart.so.13 look-alike) over the fake driver, for CPU-only tests of
// the fault-injection shim (fault_injection/cuda_fault_shim.c). Built only by the tests
// (tests/fault/conftest.py):
//   cc -O1 -shared -fPIC -Wl,-soname,libcudart.so.13 -Wl,--version-script=V -o libcudart.so.13
//      fake_cuda_runtime.c -ldl -pthread
// where the version script V is `libcudart.so.13 { global: *; };`, so that its symbols carry the
// version the real library's do (cudaMalloc@@libcudart.so.13) and programs linked against the
// real runtime (nvcc --cudart shared) run on it.
//
// It reaches the driver the way the real cudart 13 does (checked with a tracing preload against
// /usr/local/cuda-13.0/lib64/libcudart.so.13): dlopen("libcuda.so.1", RTLD_NOW) without
// RTLD_GLOBAL, dlsym(handle, "cuGetProcAddress_v2"), then every driver function through
// cuGetProcAddress. So a shim only sees the runtime's driver calls if it intercepts dlsym and
// cuGetProcAddress, which is what the tests check. The driver library is $LLMDD_CUDA_LIBRARY
// when set (tests point it at the fake driver), else libcuda.so.1.
//
// Semantics, as far as the tests need them:
//   * the driver is loaded and cuInit'ed on the first call (cudaErrorInitializationError (3)
//     when that fails); each thread has a current device (cudaSetDevice, default 0) whose
//     primary context is made current before device work;
//   * every call that fails records the error as this thread's last error: cudaGetLastError
//     returns and clears it, cudaPeekAtLastError returns it (no sticky errors are modelled);
//   * kernels, graphs and events are the fake driver's (a kernel is a host function run
//     synchronously); cudaLaunchKernelExC ignores its launch configuration;
//   * the _ptsz/_ptds entry points ask cuGetProcAddress for the per-thread-stream driver twins.
// Error values are the CUDA 13 ones, and equal the driver's for every code the fake driver
// returns, so driver errors are passed on unchanged.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef int cudaError_t;
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long cuuint64_t;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;
typedef struct {
  unsigned int x, y, z;
} dim3;

enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidDevice = 101,
  cudaErrorSymbolNotFound = 500,
};
enum { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 2 };
enum { cudaEnablePerThreadDefaultStream = 2 };

// ---- The driver, reached through cuGetProcAddress ----
typedef CUresult (*GetProc)(const char *, void **, int, cuuint64_t, int *);

#define DRIVER_FUNCTIONS(X)                                                                      \
  X(cuInit, CUresult (*)(unsigned int))                                                          \
  X(cuDeviceGetCount, CUresult (*)(int *))                                                       \
  X(cuDevicePrimaryCtxRetain, CUresult (*)(CUcontext *, CUdevice))                               \
  X(cuCtxGetCurrent, CUresult (*)(CUcontext *))                                                  \
  X(cuCtxSetCurrent, CUresult (*)(CUcontext))                                                    \
  X(cuCtxSynchronize, CUresult (*)(void))                                                        \
  X(cuMemAlloc, CUresult (*)(CUdeviceptr *, size_t))                                             \
  X(cuMemFree, CUresult (*)(CUdeviceptr))                                                        \
  X(cuMemAllocAsync, CUresult (*)(CUdeviceptr *, size_t, cudaStream_t))                          \
  X(cuMemFreeAsync, CUresult (*)(CUdeviceptr, cudaStream_t))                                     \
  X(cuMemcpy, CUresult (*)(CUdeviceptr, CUdeviceptr, size_t))                                    \
  X(cuMemcpyAsync, CUresult (*)(CUdeviceptr, CUdeviceptr, size_t, cudaStream_t))                 \
  X(cuMemsetD8, CUresult (*)(CUdeviceptr, unsigned char, size_t))                                \
  X(cuMemsetD8Async, CUresult (*)(CUdeviceptr, unsigned char, size_t, cudaStream_t))             \
  X(cuLaunchKernel, CUresult (*)(void *, unsigned int, unsigned int, unsigned int, unsigned int, \
                                 unsigned int, unsigned int, unsigned int, cudaStream_t, void **, \
                                 void **))                                                       \
  X(cuGraphLaunch, CUresult (*)(cudaGraphExec_t, cudaStream_t))                                  \
  X(cuStreamSynchronize, CUresult (*)(cudaStream_t))                                             \
  X(cuStreamQuery, CUresult (*)(cudaStream_t))                                                   \
  X(cuStreamWaitEvent, CUresult (*)(cudaStream_t, cudaEvent_t, unsigned int))                    \
  X(cuEventRecord, CUresult (*)(cudaEvent_t, cudaStream_t))                                      \
  X(cuEventSynchronize, CUresult (*)(cudaEvent_t))                                               \
  X(cuEventQuery, CUresult (*)(cudaEvent_t))

// The functions with a per-thread-default-stream twin.
#define PER_THREAD_FUNCTIONS(X)                                                                  \
  X(cuMemAllocAsync) X(cuMemFreeAsync) X(cuMemcpy) X(cuMemcpyAsync) X(cuMemsetD8)                \
  X(cuMemsetD8Async) X(cuLaunchKernel) X(cuGraphLaunch) X(cuStreamSynchronize) X(cuStreamQuery)  \
  X(cuStreamWaitEvent) X(cuEventRecord)

typedef struct {
#define X(name, type) __typeof__(type) name;
  DRIVER_FUNCTIONS(X)
#undef X
} Driver;

typedef struct {
#define X(name) __typeof__(((Driver *)0)->name) name;
  PER_THREAD_FUNCTIONS(X)
#undef X
} DriverPerThread;

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static cudaError_t g_init_error = cudaErrorInitializationError;
static GetProc g_get_proc;
static Driver g_drv;
static DriverPerThread g_drv_pt;
static __thread cudaError_t t_last_error;
static __thread int t_device;

static void load_driver(void) {
  const char *path = getenv("LLMDD_CUDA_LIBRARY");
  void *handle = dlopen(path != NULL && path[0] != '\0' ? path : "libcuda.so.1", RTLD_NOW);
  if (handle == NULL) return;
  g_get_proc = (GetProc)dlsym(handle, "cuGetProcAddress_v2");
  if (g_get_proc == NULL) return;
  int missing = 0;
#define X(name, type)                                                                 \
  if (g_get_proc(#name, (void **)&g_drv.name, 13000, 0, NULL) != 0 || !g_drv.name) { \
    missing = 1;                                                                      \
  }
  DRIVER_FUNCTIONS(X)
#undef X
#define X(name)                                                                          \
  if (g_get_proc(#name, (void **)&g_drv_pt.name, 13000,                                  \
                 CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, NULL) != 0 ||            \
      !g_drv_pt.name) {                                                                  \
    missing = 1;                                                                         \
  }
  PER_THREAD_FUNCTIONS(X)
#undef X
  if (missing) return;
  g_init_error = g_drv.cuInit(0) == 0 ? cudaSuccess : cudaErrorInitializationError;
}

static cudaError_t record(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

#define REQUIRE_DRIVER()                                        \
  do {                                                          \
    pthread_once(&g_once, load_driver);                         \
    if (g_init_error != cudaSuccess) return record(g_init_error); \
  } while (0)

// Makes the current device's primary context current on this thread.
static cudaError_t ensure_context(void) {
  pthread_once(&g_once, load_driver);
  if (g_init_error != cudaSuccess) return g_init_error;
  CUcontext want = NULL, have = NULL;
  CUresult r = g_drv.cuDevicePrimaryCtxRetain(&want, t_device);
  if (r != 0) return r;
  r = g_drv.cuCtxGetCurrent(&have);
  if (r != 0) return r;
  return have == want ? cudaSuccess : g_drv.cuCtxSetCurrent(want);
}

#define REQUIRE_CONTEXT()                  \
  do {                                     \
    cudaError_t e_ = ensure_context();     \
    if (e_ != cudaSuccess) return record(e_); \
  } while (0)

static CUdeviceptr dptr(const void *p) { return (CUdeviceptr)(uintptr_t)p; }

// ---- Devices and errors ----
EXPORT cudaError_t cudaGetDeviceCount(int *count) {
  REQUIRE_DRIVER();
  if (count == NULL) return record(cudaErrorInvalidValue);
  return record(g_drv.cuDeviceGetCount(count));
}

EXPORT cudaError_t cudaSetDevice(int device) {
  REQUIRE_DRIVER();
  int count = 0;
  CUresult r = g_drv.cuDeviceGetCount(&count);
  if (r != 0) return record(r);
  if (device < 0 || device >= count) return record(cudaErrorInvalidDevice);
  t_device = device;
  return record(ensure_context());
}

EXPORT cudaError_t cudaGetDevice(int *device) {
  if (device == NULL) return record(cudaErrorInvalidValue);
  *device = t_device;
  return cudaSuccess;
}

EXPORT cudaError_t cudaGetLastError(void) {
  cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}

EXPORT cudaError_t cudaPeekAtLastError(void) { return t_last_error; }

EXPORT cudaError_t cudaDeviceSynchronize(void) {
  REQUIRE_CONTEXT();
  return record(g_drv.cuCtxSynchronize());
}

// ---- Memory ----
EXPORT cudaError_t cudaMalloc(void **devPtr, size_t size) {
  REQUIRE_CONTEXT();
  if (devPtr == NULL) return record(cudaErrorInvalidValue);
  CUdeviceptr p = 0;
  CUresult r = g_drv.cuMemAlloc(&p, size);
  if (r == 0) *devPtr = (void *)(uintptr_t)p;
  return record(r);
}

EXPORT cudaError_t cudaFree(void *devPtr) {
  REQUIRE_CONTEXT();
  return record(g_drv.cuMemFree(dptr(devPtr)));
}

static cudaError_t malloc_async(void **devPtr, size_t size, cudaStream_t s, int per_thread) {
  REQUIRE_CONTEXT();
  if (devPtr == NULL) return record(cudaErrorInvalidValue);
  CUdeviceptr p = 0;
  CUresult r = (per_thread ? g_drv_pt.cuMemAllocAsync : g_drv.cuMemAllocAsync)(&p, size, s);
  if (r == 0) *devPtr = (void *)(uintptr_t)p;
  return record(r);
}
EXPORT cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s) {
  return malloc_async(p, n, s, 0);
}
EXPORT cudaError_t cudaMallocAsync_ptsz(void **p, size_t n, cudaStream_t s) {
  return malloc_async(p, n, s, 1);
}

// The remaining entry points forward one driver call each; NAME_ptsz/_ptds uses the twin.
#define FORWARD(name, params, call)                                   \
  EXPORT cudaError_t name params {                                    \
    REQUIRE_CONTEXT();                                                \
    const Driver *d_ = &g_drv;                                        \
    (void)d_;                                                         \
    return record(call);                                              \
  }
#define FORWARD_PT(name, params, call)                                \
  EXPORT cudaError_t name params {                                    \
    REQUIRE_CONTEXT();                                                \
    const DriverPerThread *d_ = &g_drv_pt;                            \
    (void)d_;                                                         \
    return record(call);                                              \
  }

FORWARD(cudaFreeAsync, (void *p, cudaStream_t s), d_->cuMemFreeAsync(dptr(p), s))
FORWARD_PT(cudaFreeAsync_ptsz, (void *p, cudaStream_t s), d_->cuMemFreeAsync(dptr(p), s))
FORWARD(cudaMemcpy, (void *dst, const void *src, size_t n, int kind),
        ((void)kind, d_->cuMemcpy(dptr(dst), dptr(src), n)))
FORWARD_PT(cudaMemcpy_ptds, (void *dst, const void *src, size_t n, int kind),
           ((void)kind, d_->cuMemcpy(dptr(dst), dptr(src), n)))
FORWARD(cudaMemcpyAsync, (void *dst, const void *src, size_t n, int kind, cudaStream_t s),
        ((void)kind, d_->cuMemcpyAsync(dptr(dst), dptr(src), n, s)))
FORWARD_PT(cudaMemcpyAsync_ptsz, (void *dst, const void *src, size_t n, int kind, cudaStream_t s),
           ((void)kind, d_->cuMemcpyAsync(dptr(dst), dptr(src), n, s)))
FORWARD(cudaMemset, (void *p, int value, size_t n),
        d_->cuMemsetD8(dptr(p), (unsigned char)value, n))
FORWARD_PT(cudaMemset_ptds, (void *p, int value, size_t n),
           d_->cuMemsetD8(dptr(p), (unsigned char)value, n))
FORWARD(cudaMemsetAsync, (void *p, int value, size_t n, cudaStream_t s),
        d_->cuMemsetD8Async(dptr(p), (unsigned char)value, n, s))
FORWARD_PT(cudaMemsetAsync_ptsz, (void *p, int value, size_t n, cudaStream_t s),
           d_->cuMemsetD8Async(dptr(p), (unsigned char)value, n, s))

// ---- Launches, graphs, synchronization, events ----
#define LAUNCH_CALL                                                                              \
  d_->cuLaunchKernel((void *)func, grid.x, grid.y, grid.z, block.x, block.y, block.z,            \
                     (unsigned int)shared, s, args, NULL)
FORWARD(cudaLaunchKernel,
        (const void *func, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
        LAUNCH_CALL)
FORWARD_PT(cudaLaunchKernel_ptsz,
           (const void *func, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
           LAUNCH_CALL)
FORWARD(__cudaLaunchKernel,
        (void *func, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
        LAUNCH_CALL)
FORWARD_PT(__cudaLaunchKernel_ptsz,
           (void *func, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
           LAUNCH_CALL)
FORWARD(cudaLaunchKernelExC, (const void *config, const void *func, void **args),
        ((void)config, d_->cuLaunchKernel((void *)func, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL)))
FORWARD_PT(cudaLaunchKernelExC_ptsz, (const void *config, const void *func, void **args),
           ((void)config, d_->cuLaunchKernel((void *)func, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL)))
FORWARD(cudaGraphLaunch, (cudaGraphExec_t g, cudaStream_t s), d_->cuGraphLaunch(g, s))
FORWARD_PT(cudaGraphLaunch_ptsz, (cudaGraphExec_t g, cudaStream_t s), d_->cuGraphLaunch(g, s))
FORWARD(cudaStreamSynchronize, (cudaStream_t s), d_->cuStreamSynchronize(s))
FORWARD_PT(cudaStreamSynchronize_ptsz, (cudaStream_t s), d_->cuStreamSynchronize(s))
FORWARD(cudaStreamQuery, (cudaStream_t s), d_->cuStreamQuery(s))
FORWARD_PT(cudaStreamQuery_ptsz, (cudaStream_t s), d_->cuStreamQuery(s))
FORWARD(cudaStreamWaitEvent, (cudaStream_t s, cudaEvent_t e, unsigned int f),
        d_->cuStreamWaitEvent(s, e, f))
FORWARD_PT(cudaStreamWaitEvent_ptsz, (cudaStream_t s, cudaEvent_t e, unsigned int f),
           d_->cuStreamWaitEvent(s, e, f))
FORWARD(cudaEventRecord, (cudaEvent_t e, cudaStream_t s), d_->cuEventRecord(e, s))
FORWARD_PT(cudaEventRecord_ptsz, (cudaEvent_t e, cudaStream_t s), d_->cuEventRecord(e, s))
FORWARD(cudaEventSynchronize, (cudaEvent_t e), d_->cuEventSynchronize(e))
FORWARD(cudaEventQuery, (cudaEvent_t e), d_->cuEventQuery(e))

// ---- Driver entry points ----
static cudaError_t entry_point(const char *symbol, void **funcPtr, unsigned long long flags,
                               int *status) {
  REQUIRE_DRIVER();
  if (symbol == NULL || funcPtr == NULL) return record(cudaErrorInvalidValue);
  int driver_status = 0;
  CUresult r = g_get_proc(symbol, funcPtr, 13000,
                          (flags & cudaEnablePerThreadDefaultStream)
                              ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                              : 0,
                          &driver_status);
  if (status != NULL) *status = driver_status;  // the two enums share their values
  return record(r == 0 ? cudaSuccess : cudaErrorSymbolNotFound);
}

EXPORT cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **funcPtr,
                                           unsigned long long flags, int *status) {
  return entry_point(symbol, funcPtr, flags, status);
}
EXPORT cudaError_t cudaGetDriverEntryPoint_ptsz(const char *symbol, void **funcPtr,
                                                unsigned long long flags, int *status) {
  return entry_point(symbol, funcPtr, flags | cudaEnablePerThreadDefaultStream, status);
}
EXPORT cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **funcPtr,
                                                    unsigned int cudaVersion,
                                                    unsigned long long flags, int *status) {
  (void)cudaVersion;
  return entry_point(symbol, funcPtr, flags, status);
}
EXPORT cudaError_t cudaGetDriverEntryPointByVersion_ptsz(const char *symbol, void **funcPtr,
                                                         unsigned int cudaVersion,
                                                         unsigned long long flags, int *status) {
  (void)cudaVersion;
  return entry_point(symbol, funcPtr, flags | cudaEnablePerThreadDefaultStream, status);
}

// ---- What nvcc-generated host code calls ----
// Enough for a program built with `nvcc --cudart shared` to run on the fake: fat binaries and
// functions register as no-ops, <<<>>> pushes and pops its launch configuration, and
// __cudaGetKernel hands out one stand-in kernel for every __global__ function (device code does
// not run here); fake_cudart_kernel_launches() counts how often it ran.
typedef struct {
  unsigned int x, y, z;
} uint3;

static void *g_fatbin_handle_storage;
static __thread dim3 t_grid, t_block;
static __thread size_t t_shared;
static __thread void *t_stream;
static int g_kernel_launches;

static void stand_in_kernel(void **params) {
  (void)params;
  __atomic_add_fetch(&g_kernel_launches, 1, __ATOMIC_SEQ_CST);
}

EXPORT int fake_cudart_kernel_launches(void) {
  return __atomic_load_n(&g_kernel_launches, __ATOMIC_SEQ_CST);
}

EXPORT void **__cudaRegisterFatBinary(void *fatCubin) {
  (void)fatCubin;
  return &g_fatbin_handle_storage;
}
EXPORT void __cudaRegisterFatBinaryEnd(void **handle) { (void)handle; }
EXPORT void __cudaUnregisterFatBinary(void **handle) { (void)handle; }
EXPORT char __cudaInitModule(void **handle) {
  (void)handle;
  return 1;
}
EXPORT void __cudaRegisterFunction(void **handle, const char *hostFun, char *deviceFun,
                                   const char *deviceName, int threadLimit, uint3 *tid,
                                   uint3 *bid, dim3 *bDim, dim3 *gDim, int *wSize) {
  (void)handle, (void)hostFun, (void)deviceFun, (void)deviceName, (void)threadLimit;
  (void)tid, (void)bid, (void)bDim, (void)gDim, (void)wSize;
}
EXPORT unsigned __cudaPushCallConfiguration(dim3 gridDim, dim3 blockDim, size_t sharedMem,
                                            void *stream) {
  t_grid = gridDim;
  t_block = blockDim;
  t_shared = sharedMem;
  t_stream = stream;
  return 0;
}
EXPORT cudaError_t __cudaPopCallConfiguration(dim3 *gridDim, dim3 *blockDim, size_t *sharedMem,
                                              void *stream) {
  *gridDim = t_grid;
  *blockDim = t_block;
  *sharedMem = t_shared;
  *(void **)stream = t_stream;
  return cudaSuccess;
}
EXPORT cudaError_t __cudaGetKernel(void **kernel, const void *hostFun) {
  (void)hostFun;
  if (kernel == NULL) return record(cudaErrorInvalidValue);
  *kernel = (void *)&stand_in_kernel;
  return cudaSuccess;
}
