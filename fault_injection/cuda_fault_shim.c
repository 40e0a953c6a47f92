// SPDX-License-Identifier: Apache-2.0
// libllmdd_cuda_fault.so: make the CUDA stack under any process fail the way a GPU with a given
// XID fails, and switch that on and off while the process runs.
//
//   export LD_PRELOAD=$(llm-datadist fault --shim-path)
//   LLMDD_FAULT_XID=48 LLMDD_FAULT_AFTER_CALLS=100 python serve.py
//   llm-datadist fault --xid 48 --after-calls 100 -- python serve.py      (the same, via the CLI)
//
// WHAT IS INTERCEPTED
//   The CUDA runtime (cuda*) and driver (cu*) entry points that allocate, copy, launch (kernels
//   and graphs, including CUDA 13's __cudaLaunchKernel that nvcc's <<<>>> stubs call), wait
//   (stream/event/context/device synchronization and queries), set up devices and contexts, and
//   report errors (cudaGetLastError, cudaPeekAtLastError), with their _ptsz/_ptds per-thread
//   stream twins and the versioned driver names (cuMemAlloc_v2, ...); llmdd_fault_hook_name()
//   lists them. Calls reach the shim however the caller found the function:
//     * linked or looked up through the global scope (dlsym(RTLD_DEFAULT/RTLD_NEXT, ...)), the
//       way llm_datadist's core does it: ordinary LD_PRELOAD interposition;
//     * dlopen() + dlsym(handle, name): the shim defines dlsym itself. A hooked name returns the
//       hook (the real function is captured on the way); every other name jumps straight to the
//       real dlsym with the caller's return address intact (x86-64), so RTLD_NEXT and dlmopen
//       namespaces keep their meaning for everything else. This is how cudart 13 reaches the
//       driver: dlopen("libcuda.so.1", RTLD_NOW) + dlsym(h, "cuGetProcAddress_v2") (seen here
//       with a tracing preload);
//     * cuGetProcAddress / cuGetProcAddress_v2 and cudaGetDriverEntryPoint[ByVersion][_ptsz]:
//       the pointer the real function returns is swapped for the hook of the same function,
//       matched by identity (the real pointer must be the exported symbol of that name), so a
//       hook is never handed out for an ABI version it does not implement.
//   Not reachable: statically linked cudart (nvcc's default, NCCL, many libraries) and calls
//   that libcuda or libcudart make internally. dlvsym lookups are not hooked.
//
// HOW A FAULT BEHAVES
//   A fault is OFF, ARMED (waiting for its trigger), FIRED, or RECOVERED. Every trigger given
//   must hold; a call is "matching" when its name (or its base name without _v2/_ptsz/_ptds)
//   matches LLMDD_FAULT_FUNCTIONS and it runs on LLMDD_FAULT_DEVICE (when set):
//     after_calls N    the first N matching calls pass
//     after_seconds T  no call fails before T seconds after arming
//     prob p           each matching call past the other triggers fires with probability p
//                      (a seeded generator: LLMDD_FAULT_SEED; the same sequence of calls gives
//                      the same decisions)
//   Once fired:
//     sticky (default) the error is latched, as a real XID's is: every intercepted call in
//                      scope (all functions, the chosen device) fails with it, and
//                      cudaGetLastError/cudaPeekAtLastError return it, until the fault is
//                      re-armed or disarmed through the control file or llmdd_fault_configure;
//     transient K      the next K matching calls (the firing one included) fail, then calls pass
//                      again ("recovered"); with repeat=1 the fault re-arms (counters and timer
//                      restart) instead;
//     sticky=0         (without transient) no latch: every matching call that meets the
//                      triggers fails (so prob applies to each call), other functions pass.
//   A device-scoped fault (LLMDD_FAULT_DEVICE) leaves initialization and context switches
//   (cuCtxSetCurrent, cuCtxPushCurrent) alone: they name no device, and switching away from a
//   failed GPU keeps working.
//   A failed call never reaches the real function: out-parameters stay untouched, except the
//   device counts, which become 0. A runtime call that fails also sets this thread's last error,
//   which cudaGetLastError returns (and clears) and cudaPeekAtLastError returns: nvcc's <<<>>>
//   stubs ignore the launch's return value and frameworks check cudaGetLastError instead.
//   Initialization calls (cuInit, cuDeviceGetCount, cudaGetDeviceCount) fail only with an XID
//   whose GPU is gone (79: CUDA_ERROR_NO_DEVICE, count 0); they never count as matching calls
//   otherwise, and are outside the scope of a device-filtered fault.
//   A driver call made inside an intercepted runtime call on the same thread is not counted or
//   failed a second time (one user call, one decision).
//
// THE XIDS (fault_injection/cuda_fault_table.def; the same numbers in both APIs, CUDA 13):
//    13, 31 -> 700 ILLEGAL_ADDRESS        46  -> 702 LAUNCH_TIMEOUT
//    43, 109 -> 719 LAUNCH_FAILED         48, 94, 95, 140 -> 214 ECC_UNCORRECTABLE
//    74 -> 220 NVLINK_UNCORRECTABLE       79  -> 999 UNKNOWN (init calls: 100 NO_DEVICE)
//   119, 120 -> 999 UNKNOWN
//
// ENVIRONMENT (read once, when the library loads; a bad value is reported on stderr and leaves
// the shim disarmed)
//   LLMDD_FAULT_XID=n            simulate XID n (one of the table above)
//   LLMDD_FAULT_CODE=n           inject this CUresult/cudaError_t instead of the XID's error (with
//                                no XID, llmdd_fault_last_xid() reports 0)
//   LLMDD_FAULT_ENABLED=0|1      the starting state; default 1 when XID or CODE is set. 0 with
//                                an XID is Dynamo's "passthrough": armed later by the control file
//   LLMDD_FAULT_STICKY=0|1       default 1 (see above)
//   LLMDD_FAULT_TRANSIENT=K      transient mode: K failures, then recovery
//   LLMDD_FAULT_REPEAT=0|1       transient faults re-arm after recovering
//   LLMDD_FAULT_AFTER_CALLS=N    LLMDD_FAULT_AFTER_SECONDS=T    LLMDD_FAULT_PROB=p
//   LLMDD_FAULT_SEED=n           seed of the generator behind PROB (default 1)
//   LLMDD_FAULT_DEVICE=d         only calls on CUDA device ordinal d (the call's device argument,
//                                else the current device: cudaGetDevice / cuCtxGetDevice)
//   LLMDD_FAULT_FUNCTIONS=globs  comma-separated fnmatch patterns, e.g. "cuMemcpy*,cudaMemcpy*"
//   LLMDD_FAULT_DELAY_MS=ms      the call that fires the fault first blocks this long (a GPU
//                                that hangs before it fails, e.g. XID 119)
//   LLMDD_FAULT_CONTROL_FILE=f   watch f for live changes (below)
//   LLMDD_FAULT_POLL_MS=ms       how often f is checked, default 100
//   LLMDD_FAULT_LOG_JSON=f       append JSON lines (state changes, first injection per function
//                                per episode, every injection of a transient fault) to f
//   LLMDD_FAULT_QUIET=1          no stderr lines (JSON lines still go to LLMDD_FAULT_LOG_JSON)
//   LLMDD_FAULT_PROCESS=globs    only processes whose name (/proc/self/comm) or first two argv
//                                entries' basenames match stay under the shim (LD_PRELOAD is
//                                inherited by compilers, nvidia-smi, ...); the others pass through
//   LLMDD_FAULT_SHIM             read by the Python side only (llm_datadist.fault_injection)
//   Any other LLMDD_FAULT_* variable is reported as unknown (a typo would otherwise be silent).
//
// CONTROL FILE (polled by a background thread every LLMDD_FAULT_POLL_MS: stat, and a re-read
// when its inode, size, mtime or ctime changed; also read once at load)
//   key=value lines, '#' comments; keys: enabled xid code sticky transient repeat after_calls
//   after_seconds prob seed device functions delay_ms generation. They apply over the
//   environment's settings; a file that holds only "1" or "0" is Dynamo's toggle file
//   (/host-fault/cuda_fault_enabled): enabled=1/0. Setting xid without code takes the XID's code;
//   setting code without xid clears the XID. A file that disappears gives the environment's
//   settings back. A changed file starts a new episode (counters, timer, latch reset); an
//   unchanged effective setting does nothing. When the file has generation=N, the shim answers
//   in <file>.ack.<pid> ("pid=.. generation=N state=.." or "error=..."), removed at exit; that
//   is how llm_datadist.fault_injection.ControlFile waits until a change is applied.
//   llmdd_fault_configure() (llmdd_cuda_fault.h) changes the settings in-process the same way.
//
// LOGGING: one stderr line per state change ("[llmdd-fault] pid=.. event=armed|fired|recovered|
//   rearmed|disarmed|error|warning ..."); nothing at all while disarmed.
//
// COST: a disarmed intercepted call does one atomic load of the fault state, then calls the real
//   function through its cached pointer: no getenv, no file I/O, no dlsym, no lock. The real
//   function is the one captured when dlsym or cuGetProcAddress handed the hook out, else the
//   next definition (RTLD_NEXT), else the first loaded object that defines the name; it is
//   resolved once, under a lock, and cached. A hooked function whose real definition cannot be
//   found aborts the process with a message instead of returning an invented error.
//
// PLATFORM: Linux with glibc. On x86-64 dlsym forwards by tail jump (callers keep RTLD_NEXT and
//   namespace semantics); elsewhere it forwards by call, so RTLD_NEXT lookups made by other
//   libraries resolve relative to the shim.
//
// BUILD: part of the llm_datadist package (CMake target llmdd_cuda_fault, installed as
//   llm_datadist/_testing/libllmdd_cuda_fault.so). Standalone:
//     cc -O2 -shared -fPIC -o libllmdd_cuda_fault.so cuda_fault_shim.c -ldl -pthread
//   No CUDA headers or libraries are needed: the types below have the ABI of CUDA 13's cuda.h
//   and cuda_runtime_api.h on 64-bit Linux (integers of the right width, opaque handles).
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "llmdd_cuda_fault.h"

#define EXPORT __attribute__((visibility("default")))
#define HIDDEN __attribute__((visibility("hidden")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

extern char **environ;

// ---- CUDA types (ABI of CUDA 13 on 64-bit Linux) ----
typedef int CUresult;
typedef int cudaError_t;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long cuuint64_t;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUfunc_st *CUfunction;
typedef struct CUgraphExec_st *CUgraphExec;
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;
typedef struct {
  unsigned int x, y, z;
} dim3;  // passed by value, as in vector_types.h

// ---- The intercepted entry points ----
enum { API_DRIVER = 0, API_RUNTIME = 1 };
enum { KIND_INIT = 0, KIND_CALL = 1, KIND_REPORT = 2, KIND_LOOKUP = 3 };

// X(name, api, kind). Every row has a wrapper below; the table at the end of the file takes the
// wrappers' addresses, so a row without a wrapper (or a wrapper without a row) does not compile.
#define LLMDD_HOOKS(X)                                                                           \
  X(cuInit, API_DRIVER, KIND_INIT)                                                               \
  X(cuDeviceGetCount, API_DRIVER, KIND_INIT)                                                     \
  X(cuDeviceGet, API_DRIVER, KIND_CALL)                                                          \
  X(cuDevicePrimaryCtxRetain, API_DRIVER, KIND_CALL)                                             \
  X(cuCtxCreate_v2, API_DRIVER, KIND_CALL)                                                       \
  X(cuCtxCreate_v3, API_DRIVER, KIND_CALL)                                                       \
  X(cuCtxCreate_v4, API_DRIVER, KIND_CALL)                                                       \
  X(cuCtxSetCurrent, API_DRIVER, KIND_CALL)                                                      \
  X(cuCtxPushCurrent_v2, API_DRIVER, KIND_CALL)                                                  \
  X(cuStreamCreate, API_DRIVER, KIND_CALL)                                                       \
  X(cuMemAlloc_v2, API_DRIVER, KIND_CALL)                                                        \
  X(cuMemAllocAsync, API_DRIVER, KIND_CALL)                                                      \
  X(cuMemAllocAsync_ptsz, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemFree_v2, API_DRIVER, KIND_CALL)                                                         \
  X(cuMemFreeAsync, API_DRIVER, KIND_CALL)                                                       \
  X(cuMemFreeAsync_ptsz, API_DRIVER, KIND_CALL)                                                  \
  X(cuMemcpy, API_DRIVER, KIND_CALL)                                                             \
  X(cuMemcpy_ptds, API_DRIVER, KIND_CALL)                                                        \
  X(cuMemcpyAsync, API_DRIVER, KIND_CALL)                                                        \
  X(cuMemcpyAsync_ptsz, API_DRIVER, KIND_CALL)                                                   \
  X(cuMemcpyPeer, API_DRIVER, KIND_CALL)                                                         \
  X(cuMemcpyPeer_ptds, API_DRIVER, KIND_CALL)                                                    \
  X(cuMemcpyPeerAsync, API_DRIVER, KIND_CALL)                                                    \
  X(cuMemcpyPeerAsync_ptsz, API_DRIVER, KIND_CALL)                                               \
  X(cuMemcpyHtoD_v2, API_DRIVER, KIND_CALL)                                                      \
  X(cuMemcpyHtoD_v2_ptds, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyDtoH_v2, API_DRIVER, KIND_CALL)                                                      \
  X(cuMemcpyDtoH_v2_ptds, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyDtoD_v2, API_DRIVER, KIND_CALL)                                                      \
  X(cuMemcpyDtoD_v2_ptds, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyHtoDAsync_v2, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyHtoDAsync_v2_ptsz, API_DRIVER, KIND_CALL)                                            \
  X(cuMemcpyDtoHAsync_v2, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyDtoHAsync_v2_ptsz, API_DRIVER, KIND_CALL)                                            \
  X(cuMemcpyDtoDAsync_v2, API_DRIVER, KIND_CALL)                                                 \
  X(cuMemcpyDtoDAsync_v2_ptsz, API_DRIVER, KIND_CALL)                                            \
  X(cuMemsetD8_v2, API_DRIVER, KIND_CALL)                                                        \
  X(cuMemsetD8_v2_ptds, API_DRIVER, KIND_CALL)                                                   \
  X(cuMemsetD8Async, API_DRIVER, KIND_CALL)                                                      \
  X(cuMemsetD8Async_ptsz, API_DRIVER, KIND_CALL)                                                 \
  X(cuLaunchKernel, API_DRIVER, KIND_CALL)                                                       \
  X(cuLaunchKernel_ptsz, API_DRIVER, KIND_CALL)                                                  \
  X(cuLaunchKernelEx, API_DRIVER, KIND_CALL)                                                     \
  X(cuLaunchKernelEx_ptsz, API_DRIVER, KIND_CALL)                                                \
  X(cuGraphLaunch, API_DRIVER, KIND_CALL)                                                        \
  X(cuGraphLaunch_ptsz, API_DRIVER, KIND_CALL)                                                   \
  X(cuCtxSynchronize, API_DRIVER, KIND_CALL)                                                     \
  X(cuStreamSynchronize, API_DRIVER, KIND_CALL)                                                  \
  X(cuStreamSynchronize_ptsz, API_DRIVER, KIND_CALL)                                             \
  X(cuStreamQuery, API_DRIVER, KIND_CALL)                                                        \
  X(cuStreamQuery_ptsz, API_DRIVER, KIND_CALL)                                                   \
  X(cuStreamWaitEvent, API_DRIVER, KIND_CALL)                                                    \
  X(cuStreamWaitEvent_ptsz, API_DRIVER, KIND_CALL)                                               \
  X(cuEventRecord, API_DRIVER, KIND_CALL)                                                        \
  X(cuEventRecord_ptsz, API_DRIVER, KIND_CALL)                                                   \
  X(cuEventSynchronize, API_DRIVER, KIND_CALL)                                                   \
  X(cuEventQuery, API_DRIVER, KIND_CALL)                                                         \
  X(cuGetProcAddress, API_DRIVER, KIND_LOOKUP)                                                   \
  X(cuGetProcAddress_v2, API_DRIVER, KIND_LOOKUP)                                                \
  X(cudaGetDeviceCount, API_RUNTIME, KIND_INIT)                                                  \
  X(cudaSetDevice, API_RUNTIME, KIND_CALL)                                                       \
  X(cudaGetDevice, API_RUNTIME, KIND_CALL)                                                       \
  X(cudaMalloc, API_RUNTIME, KIND_CALL)                                                          \
  X(cudaMallocAsync, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaMallocAsync_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaFree, API_RUNTIME, KIND_CALL)                                                            \
  X(cudaFreeAsync, API_RUNTIME, KIND_CALL)                                                       \
  X(cudaFreeAsync_ptsz, API_RUNTIME, KIND_CALL)                                                  \
  X(cudaMemcpy, API_RUNTIME, KIND_CALL)                                                          \
  X(cudaMemcpy_ptds, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaMemcpyAsync, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaMemcpyAsync_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaMemset, API_RUNTIME, KIND_CALL)                                                          \
  X(cudaMemset_ptds, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaMemsetAsync, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaMemsetAsync_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaLaunchKernel, API_RUNTIME, KIND_CALL)                                                    \
  X(cudaLaunchKernel_ptsz, API_RUNTIME, KIND_CALL)                                               \
  X(__cudaLaunchKernel, API_RUNTIME, KIND_CALL)                                                  \
  X(__cudaLaunchKernel_ptsz, API_RUNTIME, KIND_CALL)                                             \
  X(cudaLaunchKernelExC, API_RUNTIME, KIND_CALL)                                                 \
  X(cudaLaunchKernelExC_ptsz, API_RUNTIME, KIND_CALL)                                            \
  X(cudaGraphLaunch, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaGraphLaunch_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaStreamSynchronize, API_RUNTIME, KIND_CALL)                                               \
  X(cudaStreamSynchronize_ptsz, API_RUNTIME, KIND_CALL)                                          \
  X(cudaStreamQuery, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaStreamQuery_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaStreamWaitEvent, API_RUNTIME, KIND_CALL)                                                 \
  X(cudaStreamWaitEvent_ptsz, API_RUNTIME, KIND_CALL)                                            \
  X(cudaEventRecord, API_RUNTIME, KIND_CALL)                                                     \
  X(cudaEventRecord_ptsz, API_RUNTIME, KIND_CALL)                                                \
  X(cudaEventSynchronize, API_RUNTIME, KIND_CALL)                                                \
  X(cudaEventQuery, API_RUNTIME, KIND_CALL)                                                      \
  X(cudaDeviceSynchronize, API_RUNTIME, KIND_CALL)                                               \
  X(cudaGetLastError, API_RUNTIME, KIND_REPORT)                                                   \
  X(cudaPeekAtLastError, API_RUNTIME, KIND_REPORT)                                               \
  X(cudaGetDriverEntryPoint, API_RUNTIME, KIND_LOOKUP)                                           \
  X(cudaGetDriverEntryPoint_ptsz, API_RUNTIME, KIND_LOOKUP)                                      \
  X(cudaGetDriverEntryPointByVersion, API_RUNTIME, KIND_LOOKUP)                                  \
  X(cudaGetDriverEntryPointByVersion_ptsz, API_RUNTIME, KIND_LOOKUP)

enum {
#define X(name, api, kind) IDX_##name,
  LLMDD_HOOKS(X)
#undef X
  IDX_COUNT
};

typedef struct {
  const char *name;
  unsigned char api;
  unsigned char kind;
} HookInfo;

static const HookInfo kHooks[IDX_COUNT] = {
#define X(name, api, kind) {#name, api, kind},
    LLMDD_HOOKS(X)
#undef X
};

// Mutable per-hook state. real: the function the hook forwards to (NULL until resolved).
static _Atomic(void *) g_real[IDX_COUNT];
static _Atomic unsigned long long g_logged_episode[IDX_COUNT];
static char g_base[IDX_COUNT][48];  // name without _ptsz/_ptds and _vN: what cuGetProcAddress asks
static int g_sorted[IDX_COUNT];     // indices sorted by name, for bsearch in dlsym

// Defined at the end of the file (they need the wrappers' addresses).
static void *hook_address(int idx);
static int hook_index_of_address(const void *p);

// ---- The XID and error tables ----
static const llmdd_fault_xid_t kXids[] = {
#define LLMDD_FAULT_XID(xid, mnemonic, code, drv, rt, init_code, init_drv, action, description) \
  {xid, code, init_code, #mnemonic, #drv, #rt, #init_drv, action, description},
#include "cuda_fault_table.def"
#undef LLMDD_FAULT_XID
};
#define XID_COUNT (sizeof(kXids) / sizeof(kXids[0]))

static const llmdd_fault_error_t kErrors[] = {
#define LLMDD_FAULT_ERROR(code, drv, rt, text) {code, #drv, #rt, text},
#include "cuda_fault_table.def"
#undef LLMDD_FAULT_ERROR
};
#define ERROR_COUNT (sizeof(kErrors) / sizeof(kErrors[0]))

static const llmdd_fault_xid_t *find_xid(int xid) {
  for (size_t i = 0; i < XID_COUNT; ++i) {
    if (kXids[i].xid == xid) return &kXids[i];
  }
  return NULL;
}

static const char *error_name(int code) {
  for (size_t i = 0; i < ERROR_COUNT; ++i) {
    if (kErrors[i].code == code) return kErrors[i].driver_name;
  }
  return "CUDA_ERROR_UNNAMED";
}

// ---- Process-wide state ----
static pthread_once_t g_core_once = PTHREAD_ONCE_INIT;  // real dlsym, tables, inert check
static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;  // environment, control file
HIDDEN __attribute__((used)) void *(*llmdd_real_dlsym)(void *, const char *);
static int g_inert;      // loaded as a plain library (ctypes), not preloaded: no interposition
static int g_excluded;   // LLMDD_FAULT_PROCESS did not match this process
static int g_quiet;
static int g_json_fd = -1;
static pthread_mutex_t g_resolve_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t g_config_mu = PTHREAD_MUTEX_INITIALIZER;

static _Atomic int g_last_xid;
static _Atomic int g_last_code;
static _Atomic unsigned long long g_injections;
static _Atomic int g_runtime_injected;  // some runtime call failed: check per-thread last errors
static _Atomic unsigned long long g_episodes;

static __thread int t_depth;            // > 0 inside an intercepted call (or a shim query)
static __thread cudaError_t t_pending;  // last error of this thread's injected runtime failure

static void ensure_core(void);

// ---- Small utilities ----
static unsigned long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
}

static double wall_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    buf += n;
    len -= (size_t)n;
  }
}

// One line on stderr: "[llmdd-fault] pid=N <text>\n", written with a single write().
static void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void log_line(const char *fmt, ...) {
  if (g_quiet) return;
  char buf[1024];
  int n = snprintf(buf, sizeof(buf), "[llmdd-fault] pid=%d ", (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof(buf) - 2) len = sizeof(buf) - 2;
  buf[len++] = '\n';
  write_all(2, buf, len);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  char buf[1024];
  int n = snprintf(buf, sizeof(buf), "[llmdd-fault] pid=%d FATAL: ", (int)getpid());
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof(buf) - 2) len = sizeof(buf) - 2;
  buf[len++] = '\n';
  write_all(2, buf, len);  // even when quiet: the process is about to abort
  abort();
}

// Appends `s` to out as a JSON string body (quotes and control characters escaped).
static size_t json_escape(char *out, size_t cap, const char *s) {
  size_t n = 0;
  for (; s != NULL && *s != '\0' && n + 7 < cap; ++s) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      out[n++] = '\\';
      out[n++] = (char)ch;
    } else if (ch < 0x20) {
      n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
    } else {
      out[n++] = (char)ch;
    }
  }
  out[n] = '\0';
  return n;
}

// ---- Settings ----
enum {
  K_ENABLED,
  K_XID,
  K_CODE,
  K_STICKY,
  K_TRANSIENT,
  K_REPEAT,
  K_AFTER_CALLS,
  K_AFTER_SECONDS,
  K_PROB,
  K_SEED,
  K_DEVICE,
  K_FUNCTIONS,
  K_DELAY_MS,
  K_GENERATION,
  K_COUNT
};
static const char *const kKeys[K_COUNT] = {
    "enabled", "xid",  "code",   "sticky", "transient", "repeat",   "after_calls",
    "after_seconds", "prob", "seed", "device", "functions", "delay_ms", "generation"};

typedef struct {
  int enabled;
  int xid;        // 0: none (explicit code)
  int code;       // the error to inject
  int init_code;  // what init calls return once fired (0: they pass)
  int sticky;
  unsigned long long transient;
  int repeat;
  unsigned long long after_calls;
  double after_seconds;
  double prob;
  unsigned long long seed;
  int device;  // -1: every device
  char functions[256];
  unsigned long long delay_ms;
  unsigned long long generation;
} Settings;

// Keys given by one source (the environment, a control file, a configure() call).
typedef struct {
  Settings v;
  unsigned set;  // bit per K_*
} Overlay;

static int parse_bool(const char *s, int *out) {
  if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) {
    *out = 1;
    return 0;
  }
  if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) {
    *out = 0;
    return 0;
  }
  return -1;
}

static int parse_ull(const char *s, unsigned long long *out) {
  if (*s == '\0' || *s == '-') return -1;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0') return -1;
  *out = v;
  return 0;
}

static int parse_int(const char *s, long lo, long hi, int *out) {
  char *end = NULL;
  errno = 0;
  long v = strtol(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

static int parse_double(const char *s, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

static int key_index(const char *key) {
  for (int k = 0; k < K_COUNT; ++k) {
    if (!strcmp(kKeys[k], key)) return k;
  }
  return -1;
}

// Parses one value into the overlay; on failure writes the reason into err.
static int overlay_set(Overlay *o, int k, const char *value, char *err, size_t errlen) {
  int ok = -1;
  Settings *v = &o->v;
  switch (k) {
    case K_ENABLED: ok = parse_bool(value, &v->enabled); break;
    case K_STICKY: ok = parse_bool(value, &v->sticky); break;
    case K_REPEAT: ok = parse_bool(value, &v->repeat); break;
    case K_XID:
      ok = parse_int(value, 1, 100000, &v->xid);
      if (ok == 0 && find_xid(v->xid) == NULL) {
        char known[256];
        size_t n = 0;
        known[0] = '\0';
        for (size_t i = 0; i < XID_COUNT && n + 8 < sizeof(known); ++i) {
          n += (size_t)snprintf(known + n, sizeof(known) - n, "%s%d", i ? " " : "", kXids[i].xid);
        }
        snprintf(err, errlen, "xid=%s is not in the XID table (known: %s; or give code=)", value,
                 known);
        return -1;
      }
      break;
    case K_CODE: ok = parse_int(value, 1, 1000000, &v->code); break;
    case K_TRANSIENT: ok = parse_ull(value, &v->transient); break;
    case K_AFTER_CALLS: ok = parse_ull(value, &v->after_calls); break;
    case K_AFTER_SECONDS: ok = parse_double(value, 0.0, 1e9, &v->after_seconds); break;
    case K_PROB: ok = parse_double(value, 0.0, 1.0, &v->prob); break;
    case K_SEED: ok = parse_ull(value, &v->seed); break;
    case K_DEVICE: ok = parse_int(value, -1, 1 << 20, &v->device); break;
    case K_DELAY_MS:
      ok = parse_ull(value, &v->delay_ms);
      if (ok == 0 && v->delay_ms > 3600000ull) ok = -1;
      break;
    case K_GENERATION: ok = parse_ull(value, &v->generation); break;
    case K_FUNCTIONS:
      if (strlen(value) >= sizeof(v->functions)) {
        snprintf(err, errlen, "functions=%.40s...: longer than %zu characters", value,
                 sizeof(v->functions) - 1);
        return -1;
      }
      strcpy(v->functions, value);
      ok = 0;
      break;
    default: break;
  }
  if (ok != 0) {
    snprintf(err, errlen, "%s=%s: not a valid value", kKeys[k], value);
    return -1;
  }
  o->set |= 1u << k;
  return 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) ++s;
  char *end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

// Parses "key=value" lines (separated by newlines or ';'; '#' starts a comment). A text whose
// only content is "1" or "0" is Dynamo's toggle file: enabled=1/0.
static int parse_text(const char *text, Overlay *o, char *err, size_t errlen) {
  memset(o, 0, sizeof(*o));
  size_t len = strlen(text);
  char *copy = (char *)malloc(len + 1);
  if (copy == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(copy, text, len + 1);
  int rc = 0;
  char *save = NULL;
  for (char *line = strtok_r(copy, "\n;", &save); line != NULL; line = strtok_r(NULL, "\n;", &save)) {
    char *hash = strchr(line, '#');
    if (hash != NULL) *hash = '\0';
    char *t = trim(line);
    if (*t == '\0') continue;
    char *eq = strchr(t, '=');
    if (eq == NULL) {
      int on = 0;
      if (parse_bool(t, &on) == 0) {  // Dynamo's toggle file: "1" / "0"
        o->v.enabled = on;
        o->set |= 1u << K_ENABLED;
        continue;
      }
      snprintf(err, errlen, "'%.60s': expected key=value (or a lone 1/0)", t);
      rc = -1;
      break;
    }
    *eq = '\0';
    char *key = trim(t);
    char *value = trim(eq + 1);
    int k = key_index(key);
    if (k < 0) {
      snprintf(err, errlen, "unknown key '%.40s' (known: enabled xid code sticky transient repeat "
               "after_calls after_seconds prob seed device functions delay_ms generation)", key);
      rc = -1;
      break;
    }
    if (overlay_set(o, k, value, err, errlen) != 0) {
      rc = -1;
      break;
    }
  }
  free(copy);
  return rc;
}

static void default_settings(Settings *s) {
  memset(s, 0, sizeof(*s));
  s->sticky = 1;
  s->prob = 1.0;
  s->seed = 1;
  s->device = -1;
}

// Applies one overlay onto s. *enabled_set tracks whether some source chose `enabled`.
static void apply_overlay(Settings *s, const Overlay *o, int *enabled_set) {
  const Settings *v = &o->v;
  unsigned set = o->set;
  if (set & (1u << K_ENABLED)) {
    s->enabled = v->enabled;
    *enabled_set = 1;
  }
  if (set & (1u << K_XID)) {
    const llmdd_fault_xid_t *row = find_xid(v->xid);
    s->xid = v->xid;
    s->init_code = row ? row->init_code : 0;
    if (!(set & (1u << K_CODE))) s->code = row ? row->code : 0;
  }
  if (set & (1u << K_CODE)) {
    s->code = v->code;
    if (!(set & (1u << K_XID))) {  // an explicit code alone names no XID
      s->xid = 0;
      s->init_code = 0;
    }
  }
  if (set & (1u << K_STICKY)) s->sticky = v->sticky;
  if (set & (1u << K_TRANSIENT)) s->transient = v->transient;
  if (set & (1u << K_REPEAT)) s->repeat = v->repeat;
  if (set & (1u << K_AFTER_CALLS)) s->after_calls = v->after_calls;
  if (set & (1u << K_AFTER_SECONDS)) s->after_seconds = v->after_seconds;
  if (set & (1u << K_PROB)) s->prob = v->prob;
  if (set & (1u << K_SEED)) s->seed = v->seed;
  if (set & (1u << K_DEVICE)) s->device = v->device;
  if (set & (1u << K_FUNCTIONS)) memcpy(s->functions, v->functions, sizeof(s->functions));
  if (set & (1u << K_DELAY_MS)) s->delay_ms = v->delay_ms;
  if (set & (1u << K_GENERATION)) s->generation = v->generation;
}

// The effective settings of env + over (either may be NULL).
static int resolve_settings(const Overlay *env, const Overlay *over, Settings *out, char *err,
                            size_t errlen) {
  Settings s;
  default_settings(&s);
  int enabled_set = 0;
  if (env != NULL) apply_overlay(&s, env, &enabled_set);
  if (over != NULL) apply_overlay(&s, over, &enabled_set);
  if (!enabled_set) s.enabled = s.code != 0;
  if (over != NULL && (over->set & (1u << K_STICKY)) && (over->set & (1u << K_TRANSIENT)) &&
      over->v.sticky && over->v.transient > 0) {
    snprintf(err, errlen, "sticky=1 and transient=%llu contradict each other", over->v.transient);
    return -1;
  }
  if (s.transient > 0) s.sticky = 0;
  if (s.enabled && s.code == 0) {
    snprintf(err, errlen, "enabled without an xid or a code: nothing to inject");
    return -1;
  }
  *out = s;
  return 0;
}

// The settings as key=value lines that parse back to the same settings (xid and code only when
// set: 0 is not a valid value for either).
static int format_settings(const Settings *s, char *buf, size_t len) {
  char xid[32] = "", code[32] = "";
  if (s->xid != 0) snprintf(xid, sizeof(xid), "xid=%d\n", s->xid);
  if (s->code != 0) snprintf(code, sizeof(code), "code=%d\n", s->code);
  return snprintf(buf, len,
                  "enabled=%d\n%s%ssticky=%d\ntransient=%llu\nrepeat=%d\nafter_calls=%llu\n"
                  "after_seconds=%.17g\nprob=%.17g\nseed=%llu\ndevice=%d\nfunctions=%s\n"
                  "delay_ms=%llu\ngeneration=%llu\n",
                  s->enabled, xid, code, s->sticky, s->transient, s->repeat, s->after_calls,
                  s->after_seconds, s->prob, s->seed, s->device, s->functions, s->delay_ms,
                  s->generation);
}

static int settings_equal(const Settings *a, const Settings *b) {
  return a->enabled == b->enabled && a->xid == b->xid && a->code == b->code &&
         a->init_code == b->init_code && a->sticky == b->sticky && a->transient == b->transient &&
         a->repeat == b->repeat && a->after_calls == b->after_calls &&
         a->after_seconds == b->after_seconds && a->prob == b->prob && a->seed == b->seed &&
         a->device == b->device && !strcmp(a->functions, b->functions) &&
         a->delay_ms == b->delay_ms && a->generation == b->generation;
}

// ---- The armed fault: immutable settings plus the episode's counters ----
// FIRING: one thread won the trigger and is publishing the fault (log lines, transient
// accounting); calls on other threads in that instant pass, as if they came just before it.
enum { ST_ARMED = 0, ST_FIRED = 1, ST_RECOVERED = 2, ST_FIRING = 3 };

typedef struct {
  Settings s;
  unsigned long long episode;
  unsigned char match[IDX_COUNT];  // the function patterns, evaluated once
  uint64_t prob_threshold;         // fire when the random value is below this
  int prob_always;
  _Atomic int state;
  _Atomic unsigned long long calls;     // matching calls seen while armed
  _Atomic unsigned long long failures;  // injected failures (transient accounting)
  _Atomic unsigned long long rng;       // splitmix64 counter
  _Atomic unsigned long long armed_at_ns;
} Fault;

// NULL while disarmed. Replaced faults are never freed: a call in flight may still read one
// (a few hundred bytes per settings change).
static _Atomic(Fault *) g_active;
static Settings g_current;  // effective settings (guarded by g_config_mu)
static Overlay g_env;       // what the environment set
static int g_env_ok;

static inline Fault *active_fault(void) {
  return atomic_load_explicit(&g_active, memory_order_acquire);
}

static const char *mode_name(const Settings *s) {
  if (s->transient > 0) return s->repeat ? "transient-repeat" : "transient";
  return s->sticky ? "sticky" : "non-sticky";
}

static void json_event(const char *event, const Settings *s, unsigned long long episode,
                       const char *fn, int code, int device, unsigned long long call,
                       const char *source, const char *message) {
  if (g_json_fd < 0) return;
  char buf[1536];
  int n = snprintf(buf, sizeof(buf), "{\"ts\":%.6f,\"pid\":%d,\"event\":\"%s\"", wall_seconds(),
                   (int)getpid(), event);
  if (s != NULL) {
    n += snprintf(buf + n, sizeof(buf) - (size_t)n,
                  ",\"episode\":%llu,\"generation\":%llu,\"xid\":%d,\"code\":%d,\"error\":\"%s\","
                  "\"mode\":\"%s\"",
                  episode, s->generation, s->xid, code != 0 ? code : s->code,
                  error_name(code != 0 ? code : s->code), mode_name(s));
  }
  if (fn != NULL) n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"fn\":\"%s\"", fn);
  if (fn != NULL) n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"device\":%d", device);
  if (call != 0) n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"call\":%llu", call);
  if (source != NULL) n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"source\":\"%s\"", source);
  if (message != NULL && n < (int)sizeof(buf) - 64) {
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"message\":\"");
    n += (int)json_escape(buf + n, sizeof(buf) - (size_t)n - 4, message);
    buf[n++] = '"';
  }
  if (n > (int)sizeof(buf) - 3) n = (int)sizeof(buf) - 3;
  buf[n++] = '}';
  buf[n++] = '\n';
  write_all(g_json_fd, buf, (size_t)n);
}

static void describe_triggers(const Settings *s, char *buf, size_t len) {
  char device[16];
  if (s->device < 0) {
    snprintf(device, sizeof(device), "any");
  } else {
    snprintf(device, sizeof(device), "%d", s->device);
  }
  snprintf(buf, len, "after_calls=%llu after_seconds=%g prob=%g device=%s functions=%s",
           s->after_calls, s->after_seconds, s->prob, device,
           s->functions[0] ? s->functions : "*");
}

static int glob_list_match(const char *globs, const char *name, const char *base) {
  if (globs[0] == '\0') return 1;
  char pattern[256];
  const char *p = globs;
  while (*p != '\0') {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    if (n >= sizeof(pattern)) n = sizeof(pattern) - 1;
    memcpy(pattern, p, n);
    pattern[n] = '\0';
    char *t = trim(pattern);
    if (*t != '\0' && (fnmatch(t, name, 0) == 0 || fnmatch(t, base, 0) == 0)) return 1;
    if (comma == NULL) break;
    p = comma + 1;
  }
  return 0;
}

static Fault *make_fault(const Settings *s) {
  Fault *f = (Fault *)calloc(1, sizeof(Fault));
  if (f == NULL) return NULL;
  f->s = *s;
  f->episode = atomic_fetch_add(&g_episodes, 1) + 1;
  for (int i = 0; i < IDX_COUNT; ++i) {
    f->match[i] = (kHooks[i].kind == KIND_CALL || kHooks[i].kind == KIND_INIT) &&
                  glob_list_match(s->functions, kHooks[i].name, g_base[i]);
  }
  f->prob_always = s->prob >= 1.0;
  f->prob_threshold = f->prob_always ? UINT64_MAX : (uint64_t)(s->prob * 18446744073709551616.0);
  atomic_init(&f->state, ST_ARMED);
  atomic_init(&f->calls, 0);
  atomic_init(&f->failures, 0);
  atomic_init(&f->rng, s->seed * 0x9E3779B97F4A7C15ull);
  atomic_init(&f->armed_at_ns, now_ns());
  return f;
}

// Makes `s` the effective settings (caller holds g_config_mu). Unchanged settings keep the
// current episode unless `force`. Returns 1 when something changed.
static int apply_settings_locked(const Settings *s, const char *source, int force) {
  if (!force && settings_equal(s, &g_current) && (s->enabled == 0) == (active_fault() == NULL)) {
    return 0;
  }
  Fault *old = active_fault();
  g_current = *s;
  if (!s->enabled) {
    atomic_store_explicit(&g_active, NULL, memory_order_release);
    if (old != NULL) {
      log_line("event=disarmed source=%s generation=%llu", source, s->generation);
      json_event("disarmed", s, old->episode, NULL, 0, -1, 0, source, NULL);
    }
    return 1;
  }
  Fault *f = make_fault(s);
  if (f == NULL) {
    log_line("event=error source=%s message=\"out of memory: fault not armed\"", source);
    return 0;
  }
  atomic_store_explicit(&g_active, f, memory_order_release);
  char triggers[512];
  describe_triggers(s, triggers, sizeof(triggers));
  if (s->xid != 0) {
    log_line("event=armed xid=%d code=%d error=%s mode=%s %s source=%s generation=%llu", s->xid,
             s->code, error_name(s->code), mode_name(s), triggers, source, s->generation);
  } else {
    log_line("event=armed code=%d error=%s mode=%s %s source=%s generation=%llu", s->code,
             error_name(s->code), mode_name(s), triggers, source, s->generation);
  }
  json_event("armed", s, f->episode, NULL, 0, -1, 0, source, NULL);
  return 1;
}

static void report_error(const char *source, const char *message) {
  log_line("event=error source=%s message=\"%s\"", source, message);
  json_event("error", NULL, 0, NULL, 0, -1, 0, source, message);
}

// ---- Resolving the real functions ----
static void init_real_dlsym(void) {
  // Not the public name: the shim defines dlsym itself. dlvsym is not intercepted.
  static const char *const versions[] = {"GLIBC_2.34", "GLIBC_2.2.5", "GLIBC_2.17"};
  for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]) && llmdd_real_dlsym == NULL; ++i) {
    llmdd_real_dlsym = (void *(*)(void *, const char *))dlvsym(RTLD_NEXT, "dlsym", versions[i]);
  }
  if (llmdd_real_dlsym == NULL) die("cannot find the C library's dlsym (dlvsym RTLD_NEXT failed)");
}

static void base_name(const char *name, char *out, size_t cap) {
  size_t n = strlen(name);
  if (n >= cap) n = cap - 1;
  memcpy(out, name, n);
  out[n] = '\0';
  if (n > 5 && (!strcmp(out + n - 5, "_ptsz") || !strcmp(out + n - 5, "_ptds"))) {
    n -= 5;
    out[n] = '\0';
  }
  size_t d = n;
  while (d > 0 && isdigit((unsigned char)out[d - 1])) --d;
  if (d < n && d >= 2 && out[d - 1] == 'v' && out[d - 2] == '_') out[d - 2] = '\0';
}

static int cmp_hook_names(const void *a, const void *b) {
  return strcmp(kHooks[*(const int *)a].name, kHooks[*(const int *)b].name);
}

static void core_init(void) {
  init_real_dlsym();
  for (int i = 0; i < IDX_COUNT; ++i) {
    base_name(kHooks[i].name, g_base[i], sizeof(g_base[i]));
    g_sorted[i] = i;
  }
  qsort(g_sorted, IDX_COUNT, sizeof(int), cmp_hook_names);
  // Interpose only when this copy is the one the global scope sees (LD_PRELOAD, or an
  // RTLD_GLOBAL load): a copy opened by ctypes to read the tables stays inert.
  g_inert = llmdd_real_dlsym(RTLD_DEFAULT, "llmdd_fault_last_xid") != (void *)&llmdd_fault_last_xid;
}

static void ensure_core(void) { pthread_once(&g_core_once, core_init); }

static int find_hook(const char *name) {
  int lo = 0, hi = IDX_COUNT - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = strcmp(name, kHooks[g_sorted[mid]].name);
    if (c == 0) return g_sorted[mid];
    if (c < 0) {
      hi = mid - 1;
    } else {
      lo = mid + 1;
    }
  }
  return -1;
}

struct ScanState {
  uintptr_t self_base;
  int count;
  char names[128][256];
};

static int scan_callback(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  struct ScanState *st = (struct ScanState *)data;
  if (info->dlpi_name == NULL || info->dlpi_name[0] == '\0') return 0;  // the executable
  if ((uintptr_t)info->dlpi_addr == st->self_base) return 0;
  if (strstr(info->dlpi_name, "linux-vdso") != NULL || strstr(info->dlpi_name, "linux-gate")) {
    return 0;
  }
  if (st->count < 128 && strlen(info->dlpi_name) < sizeof(st->names[0])) {
    strcpy(st->names[st->count++], info->dlpi_name);
  }
  return 0;
}

// The first loaded object (other than the shim) that defines `name`, or NULL.
static void *scan_loaded_objects(const char *name, const void *hook) {
  static struct ScanState st;  // big; guarded by g_resolve_mu
  Dl_info self;
  memset(&st, 0, sizeof(st));
  if (dladdr((void *)&scan_loaded_objects, &self) != 0) st.self_base = (uintptr_t)self.dli_fbase;
  dl_iterate_phdr(scan_callback, &st);  // names first: no dlopen inside the iteration
  for (int i = 0; i < st.count; ++i) {
    void *h = dlopen(st.names[i], RTLD_NOLOAD | RTLD_LAZY);
    if (h == NULL) continue;
    void *p = llmdd_real_dlsym(h, name);
    dlclose(h);
    if (p != NULL && p != hook) return p;
  }
  return NULL;
}

// Finds and caches the real function behind hook idx. fatal: abort when there is none.
static void *resolve_real(int idx, int fatal) {
  void *p = atomic_load_explicit(&g_real[idx], memory_order_acquire);
  if (p != NULL) return p;
  ensure_core();
  pthread_mutex_lock(&g_resolve_mu);
  p = atomic_load_explicit(&g_real[idx], memory_order_acquire);
  if (p == NULL) {
    void *hook = hook_address(idx);
    p = llmdd_real_dlsym(RTLD_NEXT, kHooks[idx].name);
    if (p == hook) p = NULL;
    if (p == NULL) p = scan_loaded_objects(kHooks[idx].name, hook);
    if (p != NULL) atomic_store_explicit(&g_real[idx], p, memory_order_release);
  }
  pthread_mutex_unlock(&g_resolve_mu);
  if (p == NULL && fatal) {
    die("%s was called through the fault shim, but no loaded library defines the real %s "
        "(RTLD_NEXT and every loaded object searched; dlsym/cuGetProcAddress captured none). "
        "Refusing to invent an error.",
        kHooks[idx].name, kHooks[idx].name);
  }
  return p;
}

static inline void *real_fn(int idx) {
  void *p = atomic_load_explicit(&g_real[idx], memory_order_acquire);
  if (UNLIKELY(p == NULL)) p = resolve_real(idx, 1);
  return p;
}

// Optional helpers that are not hooked (the device of the current context).
static _Atomic(void *) g_cuCtxGetDevice;
static _Atomic int g_cuCtxGetDevice_tried;

static int current_device(int api) {
  int dev = -1;
  ++t_depth;  // driver calls made by the runtime while answering are not decisions
  if (api == API_RUNTIME) {
    cudaError_t (*fn)(int *) = (cudaError_t(*)(int *))resolve_real(IDX_cudaGetDevice, 0);
    if (fn == NULL || fn(&dev) != 0) dev = -1;
  } else {
    void *p = atomic_load(&g_cuCtxGetDevice);
    if (p == NULL && !atomic_load(&g_cuCtxGetDevice_tried)) {
      pthread_mutex_lock(&g_resolve_mu);
      if (!atomic_load(&g_cuCtxGetDevice_tried)) {
        p = llmdd_real_dlsym(RTLD_NEXT, "cuCtxGetDevice");
        if (p == NULL) p = scan_loaded_objects("cuCtxGetDevice", NULL);
        atomic_store(&g_cuCtxGetDevice, p);
        atomic_store(&g_cuCtxGetDevice_tried, 1);
      }
      p = atomic_load(&g_cuCtxGetDevice);
      pthread_mutex_unlock(&g_resolve_mu);
    }
    CUresult (*fn)(CUdevice *) = (CUresult(*)(CUdevice *))p;
    if (fn == NULL || fn(&dev) != 0) dev = -1;
  }
  --t_depth;
  return dev;
}

// ---- Deciding one call ----
enum { DEVICE_CURRENT = -1, DEVICE_NONE = -2 };

static int in_device_scope(const Fault *f, int idx, int device) {
  if (f->s.device < 0) return 1;
  // Initialization and context switches are not work on a device: a device-scoped fault leaves
  // them alone (switching away from a failed GPU keeps working).
  if (kHooks[idx].kind == KIND_INIT || device == DEVICE_NONE) return 0;
  if (device < 0) device = current_device(kHooks[idx].api);
  return device == f->s.device;
}

static int inject(Fault *f, int idx, int code) {
  atomic_store_explicit(&g_last_xid, f->s.xid, memory_order_relaxed);
  atomic_store_explicit(&g_last_code, code, memory_order_relaxed);
  atomic_fetch_add_explicit(&g_injections, 1, memory_order_relaxed);
  if (g_json_fd >= 0) {
    unsigned long long previous = atomic_exchange(&g_logged_episode[idx], f->episode);
    if (previous != f->episode || f->s.transient > 0) {
      json_event("inject", &f->s, f->episode, kHooks[idx].name, code, -1, 0, NULL, NULL);
    }
  }
  return code;
}

static void recover(Fault *f) {
  if (f->s.repeat) {
    atomic_store(&f->calls, 0);
    atomic_store(&f->failures, 0);
    atomic_store(&f->armed_at_ns, now_ns());
    atomic_store(&f->state, ST_ARMED);
    log_line("event=rearmed after=%llu failures (transient, repeat)", f->s.transient);
    json_event("rearmed", &f->s, f->episode, NULL, 0, -1, 0, NULL, NULL);
  } else {
    atomic_store(&f->state, ST_RECOVERED);
    log_line("event=recovered after=%llu injected failures (transient)", f->s.transient);
    json_event("recovered", &f->s, f->episode, NULL, 0, -1, 0, NULL, NULL);
  }
}

static uint64_t next_random(Fault *f) {
  uint64_t z = atomic_fetch_add_explicit(&f->rng, 0x9E3779B97F4A7C15ull, memory_order_relaxed) +
               0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Counts a matching call and checks the triggers; *n gets the call's number.
static int triggers_hold(Fault *f, unsigned long long *n) {
  *n = atomic_fetch_add(&f->calls, 1) + 1;
  if (*n <= f->s.after_calls) return 0;
  if (f->s.after_seconds > 0 &&
      (double)(now_ns() - atomic_load(&f->armed_at_ns)) / 1e9 < f->s.after_seconds) {
    return 0;
  }
  return f->prob_always || next_random(f) < f->prob_threshold;
}

// A fired fault's answer for one call: the error, or 0 to pass.
static int decide_fired(Fault *f, int idx, int code) {
  if (f->s.sticky) return inject(f, idx, code);
  if (!f->match[idx]) return 0;
  if (f->s.transient == 0) {  // no latch: every matching call is decided by the triggers
    unsigned long long n;
    return triggers_hold(f, &n) ? inject(f, idx, code) : 0;
  }
  unsigned long long n = atomic_fetch_add(&f->failures, 1) + 1;
  if (n > f->s.transient) return 0;  // another thread used up the last failure
  inject(f, idx, code);
  if (n == f->s.transient) recover(f);
  return code;
}

// The armed path of every intercepted call: the error to return, or 0 to call the real function.
static int decide(Fault *f, int idx, int device) {
  if (t_depth > 0) return 0;  // inside another intercepted call on this thread
  int code = f->s.code;
  if (kHooks[idx].kind == KIND_INIT) {
    if (f->s.init_code == 0) return 0;
    code = f->s.init_code;
  }
  if (!in_device_scope(f, idx, device)) return 0;
  int state = atomic_load_explicit(&f->state, memory_order_acquire);
  if (state == ST_FIRED) return decide_fired(f, idx, code);
  if (state != ST_ARMED || !f->match[idx]) return 0;
  unsigned long long n;
  if (!triggers_hold(f, &n)) return 0;
  int expected = ST_ARMED;
  if (!atomic_compare_exchange_strong(&f->state, &expected, ST_FIRING)) {
    if (expected != ST_FIRED) return 0;  // being fired right now, or recovered
    if (f->s.sticky || f->s.transient == 0) return inject(f, idx, code);  // met the triggers
    return decide_fired(f, idx, code);
  }
  int dev = f->s.device >= 0 ? f->s.device : device >= 0 ? device : current_device(kHooks[idx].api);
  char xid[24] = "", where[24] = "unknown";
  if (f->s.xid != 0) snprintf(xid, sizeof(xid), "xid=%d ", f->s.xid);
  if (dev >= 0) snprintf(where, sizeof(where), "%d", dev);
  log_line("event=fired %scode=%d error=%s fn=%s device=%s call=%llu mode=%s", xid, code,
           error_name(code), kHooks[idx].name, where, n, mode_name(&f->s));
  json_event("fired", &f->s, f->episode, kHooks[idx].name, code, dev, n, NULL, NULL);
  inject(f, idx, code);
  if (f->s.transient > 0) {
    atomic_store(&f->failures, 1);  // this call is the first of the K failures
    if (f->s.transient == 1) {
      recover(f);
    } else {
      atomic_store_explicit(&f->state, ST_FIRED, memory_order_release);
    }
  } else {
    atomic_store_explicit(&f->state, ST_FIRED, memory_order_release);
  }
  if (f->s.delay_ms > 0) {
    struct timespec ts = {(time_t)(f->s.delay_ms / 1000), (long)(f->s.delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  return code;
}

// ---- Control file ----
static char g_control_path[4096];
static char g_ack_path[4200];
static pid_t g_ack_pid;
static unsigned g_poll_ms = 100;
static int g_control_had_file;

typedef struct {
  int exists;
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtime, ctime;
} FileSig;
static FileSig g_control_sig;

static void write_ack(const char *text) {
  if (g_control_path[0] == '\0') return;
  snprintf(g_ack_path, sizeof(g_ack_path), "%s.ack.%d", g_control_path, (int)getpid());
  char tmp[4300];
  snprintf(tmp, sizeof(tmp), "%s.tmp", g_ack_path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  write_all(fd, text, strlen(text));
  close(fd);
  if (rename(tmp, g_ack_path) == 0) g_ack_pid = getpid();
}

static int read_small_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = 0;
  while (n + 1 < cap) {
    ssize_t r = read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(fd);
  buf[n] = '\0';
  return 0;
}

enum { CONTROL_UNCHANGED = 0, CONTROL_PRESENT = 1, CONTROL_GONE = 2 };

// Looks at the control file: CONTROL_UNCHANGED since the last look, CONTROL_GONE when it
// disappeared, CONTROL_PRESENT when it (re)appeared or changed: *over holds its settings, or
// *bad is set with the reason in err.
static int check_control_file(Overlay *over, int *bad, char *err, size_t errlen) {
  struct stat st;
  FileSig sig;
  memset(&sig, 0, sizeof(sig));
  if (stat(g_control_path, &st) == 0) {
    sig.exists = 1;
    sig.dev = st.st_dev;
    sig.ino = st.st_ino;
    sig.size = st.st_size;
    sig.mtime = st.st_mtim;
    sig.ctime = st.st_ctim;
  }
  if (memcmp(&sig, &g_control_sig, sizeof(sig)) == 0) return CONTROL_UNCHANGED;
  g_control_sig = sig;
  if (!sig.exists) {
    if (!g_control_had_file) return CONTROL_UNCHANGED;
    g_control_had_file = 0;
    return CONTROL_GONE;
  }
  char text[8192];
  if (read_small_file(g_control_path, text, sizeof(text)) != 0) {
    memset(&g_control_sig, 0, sizeof(g_control_sig));  // try again next time
    return CONTROL_UNCHANGED;
  }
  g_control_had_file = 1;
  *bad = parse_text(text, over, err, errlen) != 0;
  return CONTROL_PRESENT;
}

// The effective settings for the control file's state `what` (the environment's when the file is
// gone); -1 with err when they are invalid.
static int control_settings(int what, const Overlay *over, Settings *s, char *err, size_t errlen) {
  return resolve_settings(g_env_ok ? &g_env : NULL, what == CONTROL_PRESENT ? over : NULL, s, err,
                          errlen);
}

static void report_control_error(const Overlay *over, const char *err) {
  char msg[640];
  snprintf(msg, sizeof(msg), "%.200s: %.400s (the previous settings stay)", g_control_path, err);
  report_error("control-file", msg);
  if (over->set & (1u << K_GENERATION)) {
    char ack[768];
    snprintf(ack, sizeof(ack), "pid=%d\ngeneration=%llu\nerror=%s\n", (int)getpid(),
             over->v.generation, err);
    write_ack(ack);
  }
}

static void ack_control_settings(const Overlay *over, const Settings *s) {
  if (!(over->set & (1u << K_GENERATION))) return;
  char ack[256];
  snprintf(ack, sizeof(ack), "pid=%d\ngeneration=%llu\nstate=%s\n", (int)getpid(), s->generation,
           s->enabled ? "armed" : "off");
  write_ack(ack);
}

static void poll_control_file(void) {
  Overlay over;
  int bad = 0;
  char err[512];
  memset(&over, 0, sizeof(over));
  int what = check_control_file(&over, &bad, err, sizeof(err));
  if (what == CONTROL_UNCHANGED) return;
  Settings s;
  if (bad || control_settings(what, &over, &s, err, sizeof(err)) != 0) {
    report_control_error(&over, err);
    return;
  }
  pthread_mutex_lock(&g_config_mu);
  apply_settings_locked(&s, what == CONTROL_GONE ? "control-file-removed" : "control-file", 0);
  pthread_mutex_unlock(&g_config_mu);
  if (what == CONTROL_PRESENT) ack_control_settings(&over, &s);
}

static void *poll_main(void *arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {(time_t)(g_poll_ms / 1000), (long)(g_poll_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    poll_control_file();
  }
  return NULL;
}

static void start_poll_thread(void) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);  // signals stay with the application's threads
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  pthread_t thread;
  int rc = pthread_create(&thread, &attr, poll_main, NULL);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    report_error("control-file", "cannot start the control-file thread: changes are not seen");
  }
}

static void atfork_prepare(void) {
  pthread_mutex_lock(&g_config_mu);
  pthread_mutex_lock(&g_resolve_mu);
}

static void atfork_parent(void) {
  pthread_mutex_unlock(&g_resolve_mu);
  pthread_mutex_unlock(&g_config_mu);
}

static void atfork_child(void) {
  pthread_mutex_unlock(&g_resolve_mu);
  pthread_mutex_unlock(&g_config_mu);
  if (g_control_path[0] != '\0') start_poll_thread();  // threads do not survive fork
}

// ---- Initialization ----
static int env_flag(const char *name) {
  const char *v = getenv(name);
  int on = 0;
  return v != NULL && parse_bool(v, &on) == 0 && on;
}

static int process_matches(const char *globs) {
  char names[3][256];
  int count = 0;
  char buf[4096];
  if (read_small_file("/proc/self/comm", buf, sizeof(buf)) == 0) {
    snprintf(names[count++], sizeof(names[0]), "%.255s", trim(buf));
  }
  int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n > 0) {
      buf[n] = '\0';
      const char *arg = buf;
      for (int i = 0; i < 2 && arg < buf + n && count < 3; ++i) {
        const char *slash = strrchr(arg, '/');
        snprintf(names[count++], sizeof(names[0]), "%.255s", slash ? slash + 1 : arg);
        arg += strlen(arg) + 1;
      }
    }
  }
  for (int i = 0; i < count; ++i) {
    if (names[i][0] != '\0' && glob_list_match(globs, names[i], names[i])) return 1;
  }
  return 0;
}

static void init_once(void) {
  ensure_core();
  if (g_inert) return;
  // A fork while another thread holds a shim lock must not leave the child's copy locked.
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
  g_quiet = env_flag("LLMDD_FAULT_QUIET");
  const char *process = getenv("LLMDD_FAULT_PROCESS");
  if (process != NULL && process[0] != '\0' && !process_matches(process)) {
    g_excluded = 1;
    return;
  }
  const char *json = getenv("LLMDD_FAULT_LOG_JSON");
  if (json != NULL && json[0] != '\0') {
    g_json_fd = open(json, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (g_json_fd < 0) {
      log_line("event=error source=env message=\"LLMDD_FAULT_LOG_JSON=%s: %s\"", json,
               strerror(errno));
    }
  }

  // Every LLMDD_FAULT_* variable: the settings keys, the process-level ones, and typos.
  static const char *const kOther[] = {"CONTROL_FILE", "POLL_MS", "LOG_JSON", "QUIET",
                                       "PROCESS",      "SHIM"};
  char err[512];
  g_env_ok = 1;
  memset(&g_env, 0, sizeof(g_env));
  for (char **e = environ; e != NULL && *e != NULL; ++e) {
    if (strncmp(*e, "LLMDD_FAULT_", 12) != 0) continue;
    const char *eq = strchr(*e, '=');
    if (eq == NULL) continue;
    char key[64];
    size_t klen = (size_t)(eq - (*e + 12));
    if (klen == 0 || klen >= sizeof(key)) continue;
    for (size_t i = 0; i < klen; ++i) key[i] = (char)tolower((unsigned char)(*e)[12 + i]);
    key[klen] = '\0';
    int k = key_index(key);
    if (k >= 0 && k != K_GENERATION) {
      if (overlay_set(&g_env, k, eq + 1, err, sizeof(err)) != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "LLMDD_FAULT_%.*s: %s; fault injection stays disarmed",
                 (int)klen, *e + 12, err);
        report_error("env", msg);
        g_env_ok = 0;
      }
      continue;
    }
    int known = 0;
    for (size_t i = 0; i < sizeof(kOther) / sizeof(kOther[0]); ++i) {
      known |= strlen(kOther[i]) == klen && strncmp(kOther[i], *e + 12, klen) == 0;
    }
    if (!known) {
      char msg[300];
      snprintf(msg, sizeof(msg), "unknown variable %.*s (ignored)", (int)(eq - *e), *e);
      report_error("env", msg);
    }
  }
  if (!g_env_ok) memset(&g_env, 0, sizeof(g_env));
  Settings s;
  if (resolve_settings(g_env_ok ? &g_env : NULL, NULL, &s, err, sizeof(err)) != 0) {
    char msg[600];
    snprintf(msg, sizeof(msg), "%s; fault injection stays disarmed", err);
    report_error("env", msg);
    g_env_ok = 0;
    memset(&g_env, 0, sizeof(g_env));
    default_settings(&s);
  }
  default_settings(&g_current);

  // A control file that exists at start applies before main() runs, in one step with the
  // environment (no armed-then-disarmed flicker).
  const char *source = "env";
  Overlay over;
  int control_state = CONTROL_UNCHANGED;
  const char *control = getenv("LLMDD_FAULT_CONTROL_FILE");
  if (control != NULL && control[0] != '\0') {
    if (strlen(control) >= sizeof(g_control_path)) {
      report_error("env", "LLMDD_FAULT_CONTROL_FILE: path too long");
    } else {
      strcpy(g_control_path, control);
      const char *poll = getenv("LLMDD_FAULT_POLL_MS");
      unsigned long long ms = 0;
      if (poll != NULL && poll[0] != '\0') {
        if (parse_ull(poll, &ms) != 0 || ms == 0 || ms > 60000) {
          report_error("env", "LLMDD_FAULT_POLL_MS: expected 1..60000 (using 100)");
        } else {
          g_poll_ms = (unsigned)ms;
        }
      }
      int bad = 0;
      memset(&over, 0, sizeof(over));
      control_state = check_control_file(&over, &bad, err, sizeof(err));
      Settings with_file;
      if (control_state == CONTROL_PRESENT) {
        if (bad || control_settings(control_state, &over, &with_file, err, sizeof(err)) != 0) {
          report_control_error(&over, err);
          control_state = CONTROL_UNCHANGED;
        } else {
          s = with_file;
          source = "control-file";
        }
      }
    }
  }
  pthread_mutex_lock(&g_config_mu);
  apply_settings_locked(&s, source, 0);
  pthread_mutex_unlock(&g_config_mu);
  if (control_state == CONTROL_PRESENT) ack_control_settings(&over, &s);
  if (g_control_path[0] != '\0') start_poll_thread();
}

__attribute__((constructor)) static void shim_constructor(void) { pthread_once(&g_init_once, init_once); }

__attribute__((destructor)) static void shim_destructor(void) {
  if (g_ack_pid == getpid() && g_ack_path[0] != '\0') unlink(g_ack_path);
}

// ---- dlsym ----
// Returns 1 with *out set when `name` is intercepted (the hook, or NULL when no real definition
// exists); 0 to let the real dlsym answer the caller unchanged.
HIDDEN __attribute__((used)) int llmdd_dlsym_decide(void *handle, const char *name, void **out) {
  ensure_core();
  if (name == NULL || g_inert) return 0;
  if (!((name[0] == 'c' && name[1] == 'u') || strncmp(name, "__cuda", 6) == 0)) return 0;
  int idx = find_hook(name);
  if (idx < 0) return 0;
  void *hook = hook_address(idx);
  void *r = llmdd_real_dlsym(handle, name);
  if (r == NULL) {
    *out = NULL;  // dlerror() holds the real reason
    return 1;
  }
  if (r == hook) {  // the global scope found the shim first: the real one is behind it
    *out = resolve_real(idx, 0) != NULL ? hook : llmdd_real_dlsym(RTLD_NEXT, name);
    return 1;
  }
  void *expected = NULL;
  if (atomic_compare_exchange_strong(&g_real[idx], &expected, r) || expected == r) {
    *out = hook;
    return 1;
  }
  // A second, different definition (two CUDA libraries loaded): leave that one alone.
  static _Atomic int warned;
  if (!atomic_exchange(&warned, 1)) {
    log_line("event=warning message=\"a second definition of %s was looked up; calls through it "
             "are not intercepted\"",
             name);
  }
  *out = r;
  return 1;
}

#if defined(__x86_64__)
// dlsym must see its caller's return address (RTLD_NEXT and dlmopen namespaces depend on it), so
// the names the shim does not intercept leave through a tail jump, not a call.
__asm__(
    ".text\n"
    ".globl dlsym\n"
    ".type dlsym, @function\n"
    ".p2align 4\n"
    "dlsym:\n"
    ".cfi_startproc\n"
#if defined(__CET__)
    "endbr64\n"
#endif
    "pushq %rdi\n"
    ".cfi_adjust_cfa_offset 8\n"
    "pushq %rsi\n"
    ".cfi_adjust_cfa_offset 8\n"
    "subq $24, %rsp\n"
    ".cfi_adjust_cfa_offset 24\n"
    "leaq 8(%rsp), %rdx\n"
    "call llmdd_dlsym_decide\n"
    "testl %eax, %eax\n"
    "jnz 1f\n"
    "addq $24, %rsp\n"
    ".cfi_adjust_cfa_offset -24\n"
    "popq %rsi\n"
    ".cfi_adjust_cfa_offset -8\n"
    "popq %rdi\n"
    ".cfi_adjust_cfa_offset -8\n"
    "jmp *llmdd_real_dlsym(%rip)\n"
    "1:\n"
    ".cfi_adjust_cfa_offset 40\n"
    "movq 8(%rsp), %rax\n"
    "addq $40, %rsp\n"
    ".cfi_adjust_cfa_offset -40\n"
    "ret\n"
    ".cfi_endproc\n"
    ".size dlsym, .-dlsym\n");
#else
// Elsewhere the real dlsym sees the shim as its caller: RTLD_NEXT lookups made by other
// libraries resolve relative to the shim (a documented limitation off x86-64).
EXPORT void *dlsym(void *handle, const char *name) {
  void *out = NULL;
  if (llmdd_dlsym_decide(handle, name, &out)) return out;
  return llmdd_real_dlsym(handle, name);
}
#endif

// ---- Lookups: cuGetProcAddress and cudaGetDriverEntryPoint ----
// The hook for `symbol` whose real function is p, or p itself when none is (a function the shim
// does not intercept, or an ABI version it does not implement).
static void *map_to_hook(const char *symbol, void *p) {
  if (symbol == NULL || p == NULL || g_inert) return p;
  if (hook_index_of_address(p) >= 0) return p;  // already one of ours
  char base[64];
  base_name(symbol, base, sizeof(base));
  void *lib = NULL;
  int lib_tried = 0;
  void *result = p;
  for (int i = 0; i < IDX_COUNT; ++i) {
    if (strcmp(g_base[i], base) != 0) continue;
    void *r = atomic_load(&g_real[i]);
    if (r == NULL) {
      if (!lib_tried) {
        lib_tried = 1;
        Dl_info info;
        if (dladdr(p, &info) != 0 && info.dli_fname != NULL) {
          lib = dlopen(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
        }
      }
      if (lib != NULL && llmdd_real_dlsym(lib, kHooks[i].name) == p) {
        void *expected = NULL;
        atomic_compare_exchange_strong(&g_real[i], &expected, p);
        r = atomic_load(&g_real[i]);
      }
    }
    if (r == p) {
      result = hook_address(i);
      break;
    }
  }
  if (lib != NULL) dlclose(lib);
  return result;
}

// ---- The wrappers ----
#define DRIVER_HOOK(name, params, args, device)                                                \
  typedef CUresult(*name##_fn) params;                                                         \
  EXPORT CUresult name params {                                                                \
    Fault *f_ = active_fault();                                                                \
    if (LIKELY(f_ == NULL)) return ((name##_fn)real_fn(IDX_##name))args;                       \
    int code_ = decide(f_, IDX_##name, (device));                                              \
    if (code_ != 0) return code_;                                                              \
    ++t_depth;                                                                                 \
    CUresult r_ = ((name##_fn)real_fn(IDX_##name))args;                                        \
    --t_depth;                                                                                 \
    return r_;                                                                                 \
  }

#define RUNTIME_HOOK(name, params, args, device)                                               \
  typedef cudaError_t(*name##_fn) params;                                                      \
  EXPORT cudaError_t name params {                                                             \
    Fault *f_ = active_fault();                                                                \
    if (LIKELY(f_ == NULL)) return ((name##_fn)real_fn(IDX_##name))args;                       \
    int code_ = decide(f_, IDX_##name, (device));                                              \
    if (code_ != 0) {                                                                          \
      t_pending = code_;                                                                       \
      atomic_store_explicit(&g_runtime_injected, 1, memory_order_relaxed);                     \
      return code_;                                                                            \
    }                                                                                          \
    ++t_depth;                                                                                 \
    cudaError_t r_ = ((name##_fn)real_fn(IDX_##name))args;                                     \
    --t_depth;                                                                                 \
    return r_;                                                                                 \
  }

// Twins share a signature: cuMemcpyAsync and cuMemcpyAsync_ptsz, ...
#define DRIVER_HOOK2(name, suffix, params, args, device) \
  DRIVER_HOOK(name, params, args, device)                \
  DRIVER_HOOK(name##suffix, params, args, device)
#define RUNTIME_HOOK2(name, suffix, params, args, device) \
  RUNTIME_HOOK(name, params, args, device)                \
  RUNTIME_HOOK(name##suffix, params, args, device)

// Driver: initialization, devices, contexts, streams.
DRIVER_HOOK(cuInit, (unsigned int flags), (flags), -1)
DRIVER_HOOK(cuDeviceGet, (CUdevice * device, int ordinal), (device, ordinal), ordinal)
DRIVER_HOOK(cuDevicePrimaryCtxRetain, (CUcontext * pctx, CUdevice dev), (pctx, dev), dev)
DRIVER_HOOK(cuCtxCreate_v2, (CUcontext * pctx, unsigned int flags, CUdevice dev),
            (pctx, flags, dev), dev)
DRIVER_HOOK(cuCtxCreate_v3,
            (CUcontext * pctx, void *paramsArray, int numParams, unsigned int flags, CUdevice dev),
            (pctx, paramsArray, numParams, flags, dev), dev)
DRIVER_HOOK(cuCtxCreate_v4, (CUcontext * pctx, void *ctxCreateParams, unsigned int flags, CUdevice dev),
            (pctx, ctxCreateParams, flags, dev), dev)
DRIVER_HOOK(cuCtxSetCurrent, (CUcontext ctx), (ctx), DEVICE_NONE)
DRIVER_HOOK(cuCtxPushCurrent_v2, (CUcontext ctx), (ctx), DEVICE_NONE)
DRIVER_HOOK(cuStreamCreate, (CUstream * phStream, unsigned int flags), (phStream, flags), -1)

typedef CUresult (*cuDeviceGetCount_fn)(int *);
EXPORT CUresult cuDeviceGetCount(int *count) {
  Fault *f = active_fault();
  if (LIKELY(f == NULL)) return ((cuDeviceGetCount_fn)real_fn(IDX_cuDeviceGetCount))(count);
  int code = decide(f, IDX_cuDeviceGetCount, -1);
  if (code != 0) {
    if (count != NULL) *count = 0;
    return code;
  }
  ++t_depth;
  CUresult r = ((cuDeviceGetCount_fn)real_fn(IDX_cuDeviceGetCount))(count);
  --t_depth;
  return r;
}

// Driver: memory and copies.
DRIVER_HOOK(cuMemAlloc_v2, (CUdeviceptr * dptr, size_t bytesize), (dptr, bytesize), -1)
DRIVER_HOOK2(cuMemAllocAsync, _ptsz, (CUdeviceptr * dptr, size_t bytesize, CUstream hStream),
             (dptr, bytesize, hStream), -1)
DRIVER_HOOK(cuMemFree_v2, (CUdeviceptr dptr), (dptr), -1)
DRIVER_HOOK2(cuMemFreeAsync, _ptsz, (CUdeviceptr dptr, CUstream hStream), (dptr, hStream), -1)
DRIVER_HOOK2(cuMemcpy, _ptds, (CUdeviceptr dst, CUdeviceptr src, size_t n), (dst, src, n), -1)
DRIVER_HOOK2(cuMemcpyAsync, _ptsz, (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s),
             (dst, src, n, s), -1)
DRIVER_HOOK2(cuMemcpyPeer, _ptds,
             (CUdeviceptr dst, CUcontext dstCtx, CUdeviceptr src, CUcontext srcCtx, size_t n),
             (dst, dstCtx, src, srcCtx, n), -1)
DRIVER_HOOK2(cuMemcpyPeerAsync, _ptsz,
             (CUdeviceptr dst, CUcontext dstCtx, CUdeviceptr src, CUcontext srcCtx, size_t n,
              CUstream s),
             (dst, dstCtx, src, srcCtx, n, s), -1)
DRIVER_HOOK2(cuMemcpyHtoD_v2, _ptds, (CUdeviceptr dst, const void *src, size_t n), (dst, src, n),
             -1)
DRIVER_HOOK2(cuMemcpyDtoH_v2, _ptds, (void *dst, CUdeviceptr src, size_t n), (dst, src, n), -1)
DRIVER_HOOK2(cuMemcpyDtoD_v2, _ptds, (CUdeviceptr dst, CUdeviceptr src, size_t n), (dst, src, n),
             -1)
DRIVER_HOOK2(cuMemcpyHtoDAsync_v2, _ptsz, (CUdeviceptr dst, const void *src, size_t n, CUstream s),
             (dst, src, n, s), -1)
DRIVER_HOOK2(cuMemcpyDtoHAsync_v2, _ptsz, (void *dst, CUdeviceptr src, size_t n, CUstream s),
             (dst, src, n, s), -1)
DRIVER_HOOK2(cuMemcpyDtoDAsync_v2, _ptsz, (CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream s),
             (dst, src, n, s), -1)
DRIVER_HOOK2(cuMemsetD8_v2, _ptds, (CUdeviceptr dst, unsigned char value, size_t n),
             (dst, value, n), -1)
DRIVER_HOOK2(cuMemsetD8Async, _ptsz, (CUdeviceptr dst, unsigned char value, size_t n, CUstream s),
             (dst, value, n, s), -1)

// Driver: launches, graphs, synchronization, events.
DRIVER_HOOK2(cuLaunchKernel, _ptsz,
             (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
              unsigned int by, unsigned int bz, unsigned int shared, CUstream s, void **params,
              void **extra),
             (f, gx, gy, gz, bx, by, bz, shared, s, params, extra), -1)
DRIVER_HOOK2(cuLaunchKernelEx, _ptsz,
             (const void *config, CUfunction f, void **params, void **extra),
             (config, f, params, extra), -1)
DRIVER_HOOK2(cuGraphLaunch, _ptsz, (CUgraphExec exec, CUstream s), (exec, s), -1)
DRIVER_HOOK(cuCtxSynchronize, (void), (), -1)
DRIVER_HOOK2(cuStreamSynchronize, _ptsz, (CUstream s), (s), -1)
DRIVER_HOOK2(cuStreamQuery, _ptsz, (CUstream s), (s), -1)
DRIVER_HOOK2(cuStreamWaitEvent, _ptsz, (CUstream s, CUevent e, unsigned int flags), (s, e, flags),
             -1)
DRIVER_HOOK2(cuEventRecord, _ptsz, (CUevent e, CUstream s), (e, s), -1)
DRIVER_HOOK(cuEventSynchronize, (CUevent e), (e), -1)
DRIVER_HOOK(cuEventQuery, (CUevent e), (e), -1)

// Driver: entry-point lookups hand out hooks (never failed).
typedef CUresult (*cuGetProcAddress_fn)(const char *, void **, int, cuuint64_t);
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion, cuuint64_t flags) {
  CUresult r = ((cuGetProcAddress_fn)real_fn(IDX_cuGetProcAddress))(symbol, pfn, cudaVersion, flags);
  if (r == 0 && pfn != NULL) *pfn = map_to_hook(symbol, *pfn);
  return r;
}

typedef CUresult (*cuGetProcAddress_v2_fn)(const char *, void **, int, cuuint64_t, int *);
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags, int *symbolStatus) {
  CUresult r = ((cuGetProcAddress_v2_fn)real_fn(IDX_cuGetProcAddress_v2))(symbol, pfn, cudaVersion,
                                                                        flags, symbolStatus);
  if (r == 0 && pfn != NULL) *pfn = map_to_hook(symbol, *pfn);
  return r;
}

// Runtime: devices.
typedef cudaError_t (*cudaGetDeviceCount_fn)(int *);
EXPORT cudaError_t cudaGetDeviceCount(int *count) {
  Fault *f = active_fault();
  if (LIKELY(f == NULL)) return ((cudaGetDeviceCount_fn)real_fn(IDX_cudaGetDeviceCount))(count);
  int code = decide(f, IDX_cudaGetDeviceCount, -1);
  if (code != 0) {
    if (count != NULL) *count = 0;
    t_pending = code;
    atomic_store_explicit(&g_runtime_injected, 1, memory_order_relaxed);
    return code;
  }
  ++t_depth;
  cudaError_t r = ((cudaGetDeviceCount_fn)real_fn(IDX_cudaGetDeviceCount))(count);
  --t_depth;
  return r;
}
RUNTIME_HOOK(cudaSetDevice, (int device), (device), device)
RUNTIME_HOOK(cudaGetDevice, (int *device), (device), -1)

// Runtime: memory and copies.
RUNTIME_HOOK(cudaMalloc, (void **devPtr, size_t size), (devPtr, size), -1)
RUNTIME_HOOK2(cudaMallocAsync, _ptsz, (void **devPtr, size_t size, cudaStream_t s),
              (devPtr, size, s), -1)
RUNTIME_HOOK(cudaFree, (void *devPtr), (devPtr), -1)
RUNTIME_HOOK2(cudaFreeAsync, _ptsz, (void *devPtr, cudaStream_t s), (devPtr, s), -1)
RUNTIME_HOOK2(cudaMemcpy, _ptds, (void *dst, const void *src, size_t count, int kind),
              (dst, src, count, kind), -1)
RUNTIME_HOOK2(cudaMemcpyAsync, _ptsz,
              (void *dst, const void *src, size_t count, int kind, cudaStream_t s),
              (dst, src, count, kind, s), -1)
RUNTIME_HOOK2(cudaMemset, _ptds, (void *devPtr, int value, size_t count), (devPtr, value, count),
              -1)
RUNTIME_HOOK2(cudaMemsetAsync, _ptsz, (void *devPtr, int value, size_t count, cudaStream_t s),
              (devPtr, value, count, s), -1)

// Runtime: launches, graphs, synchronization, events.
RUNTIME_HOOK2(cudaLaunchKernel, _ptsz,
              (const void *func, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
              (func, grid, block, args, shared, s), -1)
RUNTIME_HOOK2(__cudaLaunchKernel, _ptsz,
              (void *kernel, dim3 grid, dim3 block, void **args, size_t shared, cudaStream_t s),
              (kernel, grid, block, args, shared, s), -1)
RUNTIME_HOOK2(cudaLaunchKernelExC, _ptsz, (const void *config, const void *func, void **args),
              (config, func, args), -1)
RUNTIME_HOOK2(cudaGraphLaunch, _ptsz, (cudaGraphExec_t exec, cudaStream_t s), (exec, s), -1)
RUNTIME_HOOK2(cudaStreamSynchronize, _ptsz, (cudaStream_t s), (s), -1)
RUNTIME_HOOK2(cudaStreamQuery, _ptsz, (cudaStream_t s), (s), -1)
RUNTIME_HOOK2(cudaStreamWaitEvent, _ptsz, (cudaStream_t s, cudaEvent_t e, unsigned int flags),
              (s, e, flags), -1)
RUNTIME_HOOK2(cudaEventRecord, _ptsz, (cudaEvent_t e, cudaStream_t s), (e, s), -1)
RUNTIME_HOOK(cudaEventSynchronize, (cudaEvent_t e), (e), -1)
RUNTIME_HOOK(cudaEventQuery, (cudaEvent_t e), (e), -1)
RUNTIME_HOOK(cudaDeviceSynchronize, (void), (), -1)

// Runtime: the last error. A latched (sticky) fault is reported until it is re-armed or
// disarmed; an injected transient failure is reported once by cudaGetLastError, always by
// cudaPeekAtLastError, on the thread that saw it.
typedef cudaError_t (*last_error_fn)(void);
static cudaError_t last_error(int idx, int clear) {
  Fault *f = active_fault();
  if (LIKELY(f == NULL && !atomic_load_explicit(&g_runtime_injected, memory_order_relaxed))) {
    return ((last_error_fn)real_fn(idx))();
  }
  if (f != NULL && t_depth == 0 && f->s.sticky &&
      atomic_load_explicit(&f->state, memory_order_acquire) == ST_FIRED &&
      in_device_scope(f, idx, DEVICE_CURRENT)) {
    if (clear) t_pending = 0;  // reported (the latch itself stays)
    return inject(f, idx, f->s.code);
  }
  cudaError_t pending = t_pending;
  if (pending != 0) {
    if (clear) t_pending = 0;
    return pending;
  }
  return ((last_error_fn)real_fn(idx))();
}
EXPORT cudaError_t cudaGetLastError(void) { return last_error(IDX_cudaGetLastError, 1); }
EXPORT cudaError_t cudaPeekAtLastError(void) { return last_error(IDX_cudaPeekAtLastError, 0); }

// Runtime: driver entry points hand out hooks too.
#define ENTRY_POINT_HOOK(name)                                                                 \
  typedef cudaError_t (*name##_fn)(const char *, void **, unsigned long long, int *);          \
  EXPORT cudaError_t name(const char *symbol, void **funcPtr, unsigned long long flags,        \
                          int *driverStatus) {                                                 \
    cudaError_t r = ((name##_fn)real_fn(IDX_##name))(symbol, funcPtr, flags, driverStatus);    \
    if (r == 0 && funcPtr != NULL) *funcPtr = map_to_hook(symbol, *funcPtr);                   \
    return r;                                                                                  \
  }
#define ENTRY_POINT_BY_VERSION_HOOK(name)                                                      \
  typedef cudaError_t (*name##_fn)(const char *, void **, unsigned int, unsigned long long,    \
                                   int *);                                                     \
  EXPORT cudaError_t name(const char *symbol, void **funcPtr, unsigned int cudaVersion,        \
                          unsigned long long flags, int *driverStatus) {                       \
    cudaError_t r =                                                                            \
        ((name##_fn)real_fn(IDX_##name))(symbol, funcPtr, cudaVersion, flags, driverStatus);   \
    if (r == 0 && funcPtr != NULL) *funcPtr = map_to_hook(symbol, *funcPtr);                   \
    return r;                                                                                  \
  }
ENTRY_POINT_HOOK(cudaGetDriverEntryPoint)
ENTRY_POINT_HOOK(cudaGetDriverEntryPoint_ptsz)
ENTRY_POINT_BY_VERSION_HOOK(cudaGetDriverEntryPointByVersion)
ENTRY_POINT_BY_VERSION_HOOK(cudaGetDriverEntryPointByVersion_ptsz)

// ---- The wrappers' addresses (hidden aliases: never resolved through the global scope) ----
#define X(name, api, kind) \
  extern __typeof__(name) llmdd_hook_##name __attribute__((alias(#name), visibility("hidden")));
LLMDD_HOOKS(X)
#undef X

static void *const kHookAddress[IDX_COUNT] = {
#define X(name, api, kind) (void *)&llmdd_hook_##name,
    LLMDD_HOOKS(X)
#undef X
};

static void *hook_address(int idx) { return kHookAddress[idx]; }

static int hook_index_of_address(const void *p) {
  for (int i = 0; i < IDX_COUNT; ++i) {
    if (kHookAddress[i] == p) return i;
  }
  return -1;
}

// ---- The exported API (llmdd_cuda_fault.h) ----
EXPORT int llmdd_fault_last_xid(void) { return atomic_load(&g_last_xid); }
EXPORT int llmdd_fault_last_code(void) { return atomic_load(&g_last_code); }
EXPORT unsigned long long llmdd_fault_injections(void) { return atomic_load(&g_injections); }

EXPORT const char *llmdd_fault_state(void) {
  Fault *f = active_fault();
  if (f == NULL) return "off";
  switch (atomic_load(&f->state)) {
    case ST_ARMED: return "armed";
    case ST_RECOVERED: return "recovered";
    default: return "fired";
  }
}

EXPORT int llmdd_fault_configure(const char *settings) {
  pthread_once(&g_init_once, init_once);
  if (g_inert || g_excluded) return -1;
  char err[512];
  Overlay over;
  Settings s;
  int have_text = settings != NULL && settings[0] != '\0';
  if ((have_text && parse_text(settings, &over, err, sizeof(err)) != 0) ||
      resolve_settings(g_env_ok ? &g_env : NULL, have_text ? &over : NULL, &s, err,
                       sizeof(err)) != 0) {
    report_error("configure", err);
    return -1;
  }
  pthread_mutex_lock(&g_config_mu);
  apply_settings_locked(&s, "configure", 1);  // every call starts a new episode
  pthread_mutex_unlock(&g_config_mu);
  return 0;
}

EXPORT int llmdd_fault_settings(char *buf, size_t len) {
  pthread_once(&g_init_once, init_once);
  pthread_mutex_lock(&g_config_mu);
  Settings s = g_current;
  pthread_mutex_unlock(&g_config_mu);
  char tmp[1024];
  if (buf == NULL || len == 0) return format_settings(&s, tmp, sizeof(tmp));
  return format_settings(&s, buf, len);
}

EXPORT size_t llmdd_fault_xid_count(void) { return XID_COUNT; }
EXPORT const llmdd_fault_xid_t *llmdd_fault_xid_at(size_t index) {
  return index < XID_COUNT ? &kXids[index] : NULL;
}
EXPORT size_t llmdd_fault_error_count(void) { return ERROR_COUNT; }
EXPORT const llmdd_fault_error_t *llmdd_fault_error_at(size_t index) {
  return index < ERROR_COUNT ? &kErrors[index] : NULL;
}
EXPORT size_t llmdd_fault_hook_count(void) { return IDX_COUNT; }
EXPORT const char *llmdd_fault_hook_name(size_t index) {
  return index < IDX_COUNT ? kHooks[index].name : NULL;
}
EXPORT const char *llmdd_fault_hook_api(size_t index) {
  if (index >= IDX_COUNT) return NULL;
  return kHooks[index].api == API_DRIVER ? "driver" : "runtime";
}
EXPORT const char *llmdd_fault_hook_kind(size_t index) {
  static const char *const kinds[] = {"init", "call", "report", "lookup"};
  return index < IDX_COUNT ? kinds[kHooks[index].kind] : NULL;
}
