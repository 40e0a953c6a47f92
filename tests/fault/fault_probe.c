// SPDX-License-Identifier: Apache-2.0
// A CUDA caller for the fault-injection tests: it calls CUDA entry points by name, through the
// ways real programs obtain them, and prints what each call returned. Linked against a CUDA
// runtime (the fake one on CPU-only machines), driver from $LLMDD_CUDA_LIBRARY (else
// libcuda.so.1). Built by tests/fault/conftest.py.
//
//   fault_probe OP...        run the ops in order
//   fault_probe              read ops from stdin, one per line (answers are flushed per line)
//
// Ops (each prints one line):
//   setup                 initialize the runtime (cudaSetDevice(0)) and the driver (cuInit, primary
//                         context current, two 1 MiB device buffers) -> "setup <rc>"
//   arm:K=V;K=V...        llmdd_fault_configure(...) in this process -> "arm <rc>"
//   reset                 llmdd_fault_configure(NULL): back to the environment's settings
//   PATH:NAME             call NAME with valid arguments and print "PATH:NAME <rc>"; PATH is how
//                         the function pointer is obtained:
//                           rt   the linked runtime symbol (an ordinary runtime API caller)
//                           drv  dlsym(RTLD_DEFAULT) after dlopen(driver, RTLD_GLOBAL) (the way
//                                llm_datadist's core loads the driver)
//                           dl   dlsym(handle) on dlopen(libcudart.so.13 or driver, RTLD_LOCAL)
//                           pa   cuGetProcAddress_v2(base name), itself from dlsym(driver handle)
//                           pt   the same with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
//                           pa1  cuGetProcAddress (v1)
//                           ep   cudaGetDriverEntryPoint(base name)
//   lasterr / peekerr     cudaGetLastError / cudaPeekAtLastError -> "lasterr <rc>"
//   device:N              make device N current for the runtime (cudaSetDevice) and the driver
//                         (its primary context) -> "device <rc>"
//   devcount              cudaGetDeviceCount -> "devcount <rc> <count>"
//   kernels               "kernels <n> graphs <m>": fake kernels and graphs that really ran
//   state                 "state <state> xid=<n> code=<n> injections=<n>" from the shim
//   until:RC:OP           repeat OP every 2 ms until it returns RC (10 s at most)
//                         -> "until OP <rc> after <calls> <milliseconds>"
//   bench:N:OP            call OP N times -> "bench OP <ns per call>"
//   threads:T:N:OP        T threads call OP N times each -> "threads OP ok=<n> failed=<n>"
//   sleep:MS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*Invoke)(void *fn);
typedef unsigned long long u64;
typedef struct {
  unsigned int x, y, z;
} dim3;

// ---- Arguments shared by the calls ----
static void *g_ctx;
static u64 g_dev_a, g_dev_b;
static char g_host[1 << 16];
static int g_event_storage;
static void *g_event = &g_event_storage;
static char g_launch_config[64];
static volatile int g_kernels, g_graphs;
static void fake_kernel(void **params) {
  (void)params;
  __atomic_add_fetch(&g_kernels, 1, __ATOMIC_SEQ_CST);
}
static void fake_graph(void) { __atomic_add_fetch(&g_graphs, 1, __ATOMIC_SEQ_CST); }
static void *g_kernel = (void *)&fake_kernel;
static void *g_graph = (void *)&fake_graph;
static void *g_params[1];

// ---- Canned calls, one per entry point ----
#define T(...) ((int (*)(__VA_ARGS__))fn)
static int c_cuInit(void *fn) { return T(unsigned)(0); }
static int c_cuDeviceGetCount(void *fn) { int n = -1; return T(int *)(&n); }
static int c_cuDeviceGet(void *fn) { int d; return T(int *, int)(&d, 0); }
static int c_cuDevicePrimaryCtxRetain(void *fn) { void *c; return T(void **, int)(&c, 0); }
static int c_cuCtxCreate_v2(void *fn) { void *c; return T(void **, unsigned, int)(&c, 0, 0); }
static int c_cuCtxCreate_v3(void *fn) {
  void *c;
  return T(void **, void *, int, unsigned, int)(&c, NULL, 0, 0, 0);
}
static int c_cuCtxCreate_v4(void *fn) { void *c; return T(void **, void *, unsigned, int)(&c, NULL, 0, 0); }
static int c_cuCtxSetCurrent(void *fn) { return T(void *)(g_ctx); }
static int c_cuCtxPushCurrent_v2(void *fn) { return T(void *)(g_ctx); }
static int c_cuStreamCreate(void *fn) { void *s; return T(void **, unsigned)(&s, 0); }
static int c_cuMemAlloc_v2(void *fn) { u64 p; return T(u64 *, size_t)(&p, 4096); }
static int c_cuMemAllocAsync(void *fn) { u64 p; return T(u64 *, size_t, void *)(&p, 4096, NULL); }
static int c_cuMemFree_v2(void *fn) { return T(u64)(0); }
static int c_cuMemFreeAsync(void *fn) { return T(u64, void *)(0, NULL); }
static int c_cuMemcpy(void *fn) { return T(u64, u64, size_t)(g_dev_b, g_dev_a, 256); }
static int c_cuMemcpyAsync(void *fn) { return T(u64, u64, size_t, void *)(g_dev_b, g_dev_a, 256, NULL); }
static int c_cuMemcpyPeer(void *fn) {
  return T(u64, void *, u64, void *, size_t)(g_dev_b, g_ctx, g_dev_a, g_ctx, 256);
}
static int c_cuMemcpyPeerAsync(void *fn) {
  return T(u64, void *, u64, void *, size_t, void *)(g_dev_b, g_ctx, g_dev_a, g_ctx, 256, NULL);
}
static int c_cuMemcpyHtoD(void *fn) { return T(u64, const void *, size_t)(g_dev_a, g_host, 256); }
static int c_cuMemcpyDtoH(void *fn) { return T(void *, u64, size_t)(g_host, g_dev_a, 256); }
static int c_cuMemcpyDtoD(void *fn) { return T(u64, u64, size_t)(g_dev_b, g_dev_a, 256); }
static int c_cuMemcpyHtoDAsync(void *fn) {
  return T(u64, const void *, size_t, void *)(g_dev_a, g_host, 256, NULL);
}
static int c_cuMemcpyDtoHAsync(void *fn) { return T(void *, u64, size_t, void *)(g_host, g_dev_a, 256, NULL); }
static int c_cuMemcpyDtoDAsync(void *fn) { return T(u64, u64, size_t, void *)(g_dev_b, g_dev_a, 256, NULL); }
static int c_cuMemsetD8(void *fn) { return T(u64, unsigned char, size_t)(g_dev_a, 7, 256); }
static int c_cuMemsetD8Async(void *fn) {
  return T(u64, unsigned char, size_t, void *)(g_dev_a, 7, 256, NULL);
}
static int c_cuLaunchKernel(void *fn) {
  return T(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, void *,
           void **, void **)(g_kernel, 1, 1, 1, 1, 1, 1, 0, NULL, g_params, NULL);
}
static int c_cuLaunchKernelEx(void *fn) {
  return T(const void *, void *, void **, void **)(g_launch_config, g_kernel, g_params, NULL);
}
static int c_cuGraphLaunch(void *fn) { return T(void *, void *)(g_graph, NULL); }
static int c_void(void *fn) { return T(void)(); }
static int c_stream(void *fn) { return T(void *)(NULL); }
static int c_cuStreamWaitEvent(void *fn) { return T(void *, void *, unsigned)(NULL, g_event, 0); }
static int c_cuEventRecord(void *fn) { return T(void *, void *)(g_event, NULL); }
static int c_event(void *fn) { return T(void *)(g_event); }
static int c_cuGetProcAddress_v2(void *fn) {
  void *p;
  int st;
  return T(const char *, void **, int, u64, int *)("cuInit", &p, 13000, 0, &st);
}
static int c_cuGetProcAddress(void *fn) {
  void *p;
  return T(const char *, void **, int, u64)("cuInit", &p, 13000, 0);
}

static int c_cudaGetDeviceCount(void *fn) { int n = -1; return T(int *)(&n); }
static int c_cudaSetDevice(void *fn) { return T(int)(0); }
static int c_cudaGetDevice(void *fn) { int d; return T(int *)(&d); }
static int c_cudaMalloc(void *fn) { void *p; return T(void **, size_t)(&p, 4096); }
static int c_cudaMallocAsync(void *fn) { void *p; return T(void **, size_t, void *)(&p, 4096, NULL); }
static int c_cudaFree(void *fn) { return T(void *)(NULL); }
static int c_cudaFreeAsync(void *fn) { return T(void *, void *)(NULL, NULL); }
static int c_cudaMemcpy(void *fn) {
  return T(void *, const void *, size_t, int)((void *)g_dev_b, (void *)g_dev_a, 256, 3);
}
static int c_cudaMemcpyAsync(void *fn) {
  return T(void *, const void *, size_t, int, void *)((void *)g_dev_b, (void *)g_dev_a, 256, 3, NULL);
}
static int c_cudaMemset(void *fn) { return T(void *, int, size_t)((void *)g_dev_a, 7, 256); }
static int c_cudaMemsetAsync(void *fn) {
  return T(void *, int, size_t, void *)((void *)g_dev_a, 7, 256, NULL);
}
static int c_cudaLaunchKernel(void *fn) {
  dim3 one = {1, 1, 1};
  return T(const void *, dim3, dim3, void **, size_t, void *)(g_kernel, one, one, g_params, 0, NULL);
}
static int c_cudaLaunchKernelExC(void *fn) {
  return T(const void *, const void *, void **)(g_launch_config, g_kernel, g_params);
}
static int c_cudaStreamWaitEvent(void *fn) { return T(void *, void *, unsigned)(NULL, g_event, 0); }
static int c_cudaEventRecord(void *fn) { return T(void *, void *)(g_event, NULL); }
static int c_cudaGetDriverEntryPoint(void *fn) {
  void *p;
  int st;
  return T(const char *, void **, unsigned long long, int *)("cuInit", &p, 0, &st);
}
static int c_cudaGetDriverEntryPointByVersion(void *fn) {
  void *p;
  int st;
  return T(const char *, void **, unsigned, unsigned long long, int *)("cuInit", &p, 13000, 0, &st);
}
#undef T

typedef struct {
  const char *name;
  Invoke invoke;
} Entry;

static const Entry kEntries[] = {
    {"cuInit", c_cuInit},
    {"cuDeviceGetCount", c_cuDeviceGetCount},
    {"cuDeviceGet", c_cuDeviceGet},
    {"cuDevicePrimaryCtxRetain", c_cuDevicePrimaryCtxRetain},
    {"cuCtxCreate_v2", c_cuCtxCreate_v2},
    {"cuCtxCreate_v3", c_cuCtxCreate_v3},
    {"cuCtxCreate_v4", c_cuCtxCreate_v4},
    {"cuCtxSetCurrent", c_cuCtxSetCurrent},
    {"cuCtxPushCurrent_v2", c_cuCtxPushCurrent_v2},
    {"cuStreamCreate", c_cuStreamCreate},
    {"cuMemAlloc_v2", c_cuMemAlloc_v2},
    {"cuMemAllocAsync", c_cuMemAllocAsync},
    {"cuMemAllocAsync_ptsz", c_cuMemAllocAsync},
    {"cuMemFree_v2", c_cuMemFree_v2},
    {"cuMemFreeAsync", c_cuMemFreeAsync},
    {"cuMemFreeAsync_ptsz", c_cuMemFreeAsync},
    {"cuMemcpy", c_cuMemcpy},
    {"cuMemcpy_ptds", c_cuMemcpy},
    {"cuMemcpyAsync", c_cuMemcpyAsync},
    {"cuMemcpyAsync_ptsz", c_cuMemcpyAsync},
    {"cuMemcpyPeer", c_cuMemcpyPeer},
    {"cuMemcpyPeer_ptds", c_cuMemcpyPeer},
    {"cuMemcpyPeerAsync", c_cuMemcpyPeerAsync},
    {"cuMemcpyPeerAsync_ptsz", c_cuMemcpyPeerAsync},
    {"cuMemcpyHtoD_v2", c_cuMemcpyHtoD},
    {"cuMemcpyHtoD_v2_ptds", c_cuMemcpyHtoD},
    {"cuMemcpyDtoH_v2", c_cuMemcpyDtoH},
    {"cuMemcpyDtoH_v2_ptds", c_cuMemcpyDtoH},
    {"cuMemcpyDtoD_v2", c_cuMemcpyDtoD},
    {"cuMemcpyDtoD_v2_ptds", c_cuMemcpyDtoD},
    {"cuMemcpyHtoDAsync_v2", c_cuMemcpyHtoDAsync},
    {"cuMemcpyHtoDAsync_v2_ptsz", c_cuMemcpyHtoDAsync},
    {"cuMemcpyDtoHAsync_v2", c_cuMemcpyDtoHAsync},
    {"cuMemcpyDtoHAsync_v2_ptsz", c_cuMemcpyDtoHAsync},
    {"cuMemcpyDtoDAsync_v2", c_cuMemcpyDtoDAsync},
    {"cuMemcpyDtoDAsync_v2_ptsz", c_cuMemcpyDtoDAsync},
    {"cuMemsetD8_v2", c_cuMemsetD8},
    {"cuMemsetD8_v2_ptds", c_cuMemsetD8},
    {"cuMemsetD8Async", c_cuMemsetD8Async},
    {"cuMemsetD8Async_ptsz", c_cuMemsetD8Async},
    {"cuLaunchKernel", c_cuLaunchKernel},
    {"cuLaunchKernel_ptsz", c_cuLaunchKernel},
    {"cuLaunchKernelEx", c_cuLaunchKernelEx},
    {"cuLaunchKernelEx_ptsz", c_cuLaunchKernelEx},
    {"cuGraphLaunch", c_cuGraphLaunch},
    {"cuGraphLaunch_ptsz", c_cuGraphLaunch},
    {"cuCtxSynchronize", c_void},
    {"cuStreamSynchronize", c_stream},
    {"cuStreamSynchronize_ptsz", c_stream},
    {"cuStreamQuery", c_stream},
    {"cuStreamQuery_ptsz", c_stream},
    {"cuStreamWaitEvent", c_cuStreamWaitEvent},
    {"cuStreamWaitEvent_ptsz", c_cuStreamWaitEvent},
    {"cuEventRecord", c_cuEventRecord},
    {"cuEventRecord_ptsz", c_cuEventRecord},
    {"cuEventSynchronize", c_event},
    {"cuEventQuery", c_event},
    {"cuGetProcAddress", c_cuGetProcAddress},
    {"cuGetProcAddress_v2", c_cuGetProcAddress_v2},
    {"cudaGetDeviceCount", c_cudaGetDeviceCount},
    {"cudaSetDevice", c_cudaSetDevice},
    {"cudaGetDevice", c_cudaGetDevice},
    {"cudaMalloc", c_cudaMalloc},
    {"cudaMallocAsync", c_cudaMallocAsync},
    {"cudaMallocAsync_ptsz", c_cudaMallocAsync},
    {"cudaFree", c_cudaFree},
    {"cudaFreeAsync", c_cudaFreeAsync},
    {"cudaFreeAsync_ptsz", c_cudaFreeAsync},
    {"cudaMemcpy", c_cudaMemcpy},
    {"cudaMemcpy_ptds", c_cudaMemcpy},
    {"cudaMemcpyAsync", c_cudaMemcpyAsync},
    {"cudaMemcpyAsync_ptsz", c_cudaMemcpyAsync},
    {"cudaMemset", c_cudaMemset},
    {"cudaMemset_ptds", c_cudaMemset},
    {"cudaMemsetAsync", c_cudaMemsetAsync},
    {"cudaMemsetAsync_ptsz", c_cudaMemsetAsync},
    {"cudaLaunchKernel", c_cudaLaunchKernel},
    {"cudaLaunchKernel_ptsz", c_cudaLaunchKernel},
    {"__cudaLaunchKernel", c_cudaLaunchKernel},
    {"__cudaLaunchKernel_ptsz", c_cudaLaunchKernel},
    {"cudaLaunchKernelExC", c_cudaLaunchKernelExC},
    {"cudaLaunchKernelExC_ptsz", c_cudaLaunchKernelExC},
    {"cudaGraphLaunch", c_cuGraphLaunch},
    {"cudaGraphLaunch_ptsz", c_cuGraphLaunch},
    {"cudaStreamSynchronize", c_stream},
    {"cudaStreamSynchronize_ptsz", c_stream},
    {"cudaStreamQuery", c_stream},
    {"cudaStreamQuery_ptsz", c_stream},
    {"cudaStreamWaitEvent", c_cudaStreamWaitEvent},
    {"cudaStreamWaitEvent_ptsz", c_cudaStreamWaitEvent},
    {"cudaEventRecord", c_cudaEventRecord},
    {"cudaEventRecord_ptsz", c_cudaEventRecord},
    {"cudaEventSynchronize", c_event},
    {"cudaEventQuery", c_event},
    {"cudaDeviceSynchronize", c_void},
    {"cudaGetLastError", c_void},
    {"cudaPeekAtLastError", c_void},
    {"cudaGetDriverEntryPoint", c_cudaGetDriverEntryPoint},
    {"cudaGetDriverEntryPoint_ptsz", c_cudaGetDriverEntryPoint},
    {"cudaGetDriverEntryPointByVersion", c_cudaGetDriverEntryPointByVersion},
    {"cudaGetDriverEntryPointByVersion_ptsz", c_cudaGetDriverEntryPointByVersion},
};

// The runtime symbols this program links against (addresses taken through the global scope,
// exactly like calls through the PLT).
#define RUNTIME_SYMBOLS(X)                                                                       \
  X(cudaGetDeviceCount) X(cudaSetDevice) X(cudaGetDevice) X(cudaMalloc) X(cudaMallocAsync)       \
  X(cudaMallocAsync_ptsz) X(cudaFree) X(cudaFreeAsync) X(cudaFreeAsync_ptsz) X(cudaMemcpy)       \
  X(cudaMemcpy_ptds) X(cudaMemcpyAsync) X(cudaMemcpyAsync_ptsz) X(cudaMemset) X(cudaMemset_ptds) \
  X(cudaMemsetAsync) X(cudaMemsetAsync_ptsz) X(cudaLaunchKernel) X(cudaLaunchKernel_ptsz)        \
  X(__cudaLaunchKernel) X(__cudaLaunchKernel_ptsz) X(cudaLaunchKernelExC)                        \
  X(cudaLaunchKernelExC_ptsz) X(cudaGraphLaunch) X(cudaGraphLaunch_ptsz)                         \
  X(cudaStreamSynchronize) X(cudaStreamSynchronize_ptsz) X(cudaStreamQuery)                      \
  X(cudaStreamQuery_ptsz) X(cudaStreamWaitEvent) X(cudaStreamWaitEvent_ptsz) X(cudaEventRecord)  \
  X(cudaEventRecord_ptsz) X(cudaEventSynchronize) X(cudaEventQuery) X(cudaDeviceSynchronize)     \
  X(cudaGetLastError) X(cudaPeekAtLastError) X(cudaGetDriverEntryPoint)                          \
  X(cudaGetDriverEntryPoint_ptsz) X(cudaGetDriverEntryPointByVersion)                            \
  X(cudaGetDriverEntryPointByVersion_ptsz)
#define X(name) extern void name(void);
RUNTIME_SYMBOLS(X)
#undef X
static const struct {
  const char *name;
  void *fn;
} kLinked[] = {
#define X(name) {#name, (void *)&name},
    RUNTIME_SYMBOLS(X)
#undef X
};

static void *linked(const char *name) {
  for (size_t i = 0; i < sizeof(kLinked) / sizeof(kLinked[0]); ++i) {
    if (!strcmp(kLinked[i].name, name)) return kLinked[i].fn;
  }
  return NULL;
}

static void *g_driver;   // dlopen(driver), RTLD_GLOBAL
static void *g_runtime;  // dlopen("libcudart.so.13")
typedef int (*GetProc2)(const char *, void **, int, u64, int *);
typedef int (*GetProc1)(const char *, void **, int, u64);

static const Entry *find_entry(const char *name) {
  for (size_t i = 0; i < sizeof(kEntries) / sizeof(kEntries[0]); ++i) {
    if (!strcmp(kEntries[i].name, name)) return &kEntries[i];
  }
  return NULL;
}

static void open_libraries(void) {
  if (g_driver != NULL) return;
  const char *path = getenv("LLMDD_CUDA_LIBRARY");
  g_driver = dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  g_runtime = dlopen("libcudart.so.13", RTLD_NOW | RTLD_LOCAL);
  if (g_driver == NULL || g_runtime == NULL) {
    fprintf(stderr, "fault_probe: cannot open the CUDA libraries: %s\n", dlerror());
    exit(3);
  }
}

static void base_name(const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s", name);
  size_t n = strlen(out);
  if (n > 5 && (!strcmp(out + n - 5, "_ptsz") || !strcmp(out + n - 5, "_ptds"))) out[n -= 5] = '\0';
  if (n > 3 && out[n - 3] == '_' && out[n - 2] == 'v' && out[n - 1] >= '0' && out[n - 1] <= '9') {
    out[n - 3] = '\0';
  }
}

// The function pointer for NAME obtained through PATH, or NULL (with a reason on stderr).
static void *lookup(const char *path, const char *name) {
  open_libraries();
  int runtime = strncmp(name, "cuda", 4) == 0 || strncmp(name, "__cuda", 6) == 0;
  char base[128];
  base_name(name, base, sizeof(base));
  if (!strcmp(path, "rt")) return linked(name);
  if (!strcmp(path, "drv")) return dlsym(RTLD_DEFAULT, name);
  if (!strcmp(path, "dl")) return dlsym(runtime ? g_runtime : g_driver, name);
  void *fn = NULL;
  if (!strcmp(path, "pa") || !strcmp(path, "pt")) {
    GetProc2 gp = (GetProc2)dlsym(g_driver, "cuGetProcAddress_v2");
    int st = -1;
    if (gp == NULL || gp(base, &fn, 13000, !strcmp(path, "pt") ? 2 : 0, &st) != 0) return NULL;
    return fn;
  }
  if (!strcmp(path, "pa1")) {
    GetProc1 gp = (GetProc1)dlsym(g_driver, "cuGetProcAddress");
    if (gp == NULL || gp(base, &fn, 13000, 0) != 0) return NULL;
    return fn;
  }
  if (!strcmp(path, "ep")) {
    int (*ep)(const char *, void **, unsigned long long, int *) =
        (int (*)(const char *, void **, unsigned long long, int *))linked("cudaGetDriverEntryPoint");
    int st = -1;
    if (ep(base, &fn, 0, &st) != 0) return NULL;
    return fn;
  }
  fprintf(stderr, "fault_probe: unknown path %s\n", path);
  exit(2);
}

// Runs "PATH:NAME"; returns the call's result, or -1000 when the function cannot be obtained.
static int call_op(const char *op) {
  char path[16], name[128];
  const char *colon = strchr(op, ':');
  if (colon == NULL || (size_t)(colon - op) >= sizeof(path)) {
    fprintf(stderr, "fault_probe: bad op %s\n", op);
    exit(2);
  }
  memcpy(path, op, (size_t)(colon - op));
  path[colon - op] = '\0';
  snprintf(name, sizeof(name), "%s", colon + 1);
  const Entry *e = find_entry(name);
  if (e == NULL) {
    fprintf(stderr, "fault_probe: no canned call for %s\n", name);
    exit(2);
  }
  void *fn = lookup(path, name);
  if (fn == NULL) return -1000;
  return e->invoke(fn);
}

static int setup(void) {
  open_libraries();
  int rc = ((int (*)(int))linked("cudaSetDevice"))(0);
  if (rc != 0) return rc;
  int (*init)(unsigned) = (int (*)(unsigned))dlsym(g_driver, "cuInit");
  int (*retain)(void **, int) = (int (*)(void **, int))dlsym(g_driver, "cuDevicePrimaryCtxRetain");
  int (*set)(void *) = (int (*)(void *))dlsym(g_driver, "cuCtxSetCurrent");
  int (*alloc)(u64 *, size_t) = (int (*)(u64 *, size_t))dlsym(g_driver, "cuMemAlloc_v2");
  if (!init || !retain || !set || !alloc) return -1000;
  if ((rc = init(0)) || (rc = retain(&g_ctx, 0)) || (rc = set(g_ctx))) return rc;
  if ((rc = alloc(&g_dev_a, 1 << 20)) || (rc = alloc(&g_dev_b, 1 << 20))) return rc;
  return 0;
}

static u64 now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (u64)ts.tv_sec * 1000000000ull + (u64)ts.tv_nsec;
}

typedef struct {
  const char *op;
  int calls;
  int ok, failed;
} ThreadJob;

static void *thread_main(void *arg) {
  ThreadJob *job = (ThreadJob *)arg;
  for (int i = 0; i < job->calls; ++i) {
    if (call_op(job->op) == 0) {
      ++job->ok;
    } else {
      ++job->failed;
    }
  }
  return NULL;
}

static void run(const char *op) {
  if (!strcmp(op, "setup")) {
    printf("setup %d\n", setup());
  } else if (!strncmp(op, "arm:", 4) || !strcmp(op, "reset")) {
    int (*configure)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "llmdd_fault_configure");
    if (configure == NULL) {
      printf("arm no-shim\n");
    } else {
      printf("arm %d\n", configure(op[0] == 'a' ? op + 4 : NULL));
    }
  } else if (!strncmp(op, "device:", 7)) {
    open_libraries();
    int dev = atoi(op + 7);
    int (*retain)(void **, int) = (int (*)(void **, int))dlsym(g_driver, "cuDevicePrimaryCtxRetain");
    int (*set)(void *) = (int (*)(void *))dlsym(g_driver, "cuCtxSetCurrent");
    void *ctx = NULL;
    int rc = ((int (*)(int))linked("cudaSetDevice"))(dev);
    if (rc == 0) rc = retain(&ctx, dev);
    if (rc == 0) rc = set(ctx);
    printf("device %d\n", rc);
  } else if (!strcmp(op, "devcount")) {
    int n = -1;
    int rc = ((int (*)(int *))linked("cudaGetDeviceCount"))(&n);
    printf("devcount %d %d\n", rc, n);
  } else if (!strcmp(op, "lasterr")) {
    printf("lasterr %d\n", ((int (*)(void))linked("cudaGetLastError"))());
  } else if (!strcmp(op, "peekerr")) {
    printf("peekerr %d\n", ((int (*)(void))linked("cudaPeekAtLastError"))());
  } else if (!strcmp(op, "kernels")) {
    printf("kernels %d graphs %d\n", g_kernels, g_graphs);
  } else if (!strcmp(op, "state")) {
    const char *(*state)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "llmdd_fault_state");
    int (*xid)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "llmdd_fault_last_xid");
    int (*code)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "llmdd_fault_last_code");
    u64 (*inj)(void) = (u64(*)(void))dlsym(RTLD_DEFAULT, "llmdd_fault_injections");
    if (!state || !xid || !code || !inj) {
      printf("state no-shim\n");
    } else {
      printf("state %s xid=%d code=%d injections=%llu\n", state(), xid(), code(), inj());
    }
  } else if (!strncmp(op, "until:", 6)) {
    int want = atoi(op + 6);
    const char *inner = strchr(op + 6, ':');
    if (inner == NULL) exit(2);
    ++inner;
    int rc = -1, calls = 0;
    u64 start = now_ns(), deadline = start + 10000000000ull;
    do {
      rc = call_op(inner);
      ++calls;
      if (rc == want) break;
      usleep(2000);
    } while (now_ns() < deadline);
    printf("until %s %d after %d %.0f\n", inner, rc, calls, (double)(now_ns() - start) / 1e6);
  } else if (!strncmp(op, "bench:", 6)) {
    long n = atol(op + 6);
    const char *inner = strchr(op + 6, ':');
    if (inner == NULL || n <= 0) exit(2);
    ++inner;
    u64 t0 = now_ns();
    for (long i = 0; i < n; ++i) call_op(inner);
    printf("bench %s %.2f\n", inner, (double)(now_ns() - t0) / (double)n);
  } else if (!strncmp(op, "threads:", 8)) {
    int threads = atoi(op + 8);
    const char *p = strchr(op + 8, ':');
    if (p == NULL || threads <= 0 || threads > 64) exit(2);
    int calls = atoi(p + 1);
    const char *inner = strchr(p + 1, ':');
    if (inner == NULL) exit(2);
    ++inner;
    pthread_t tids[64];
    ThreadJob jobs[64];
    for (int i = 0; i < threads; ++i) {
      jobs[i] = (ThreadJob){inner, calls, 0, 0};
      pthread_create(&tids[i], NULL, thread_main, &jobs[i]);
    }
    int ok = 0, failed = 0;
    for (int i = 0; i < threads; ++i) {
      pthread_join(tids[i], NULL);
      ok += jobs[i].ok;
      failed += jobs[i].failed;
    }
    printf("threads %s ok=%d failed=%d\n", inner, ok, failed);
  } else if (!strncmp(op, "sleep:", 6)) {
    usleep((useconds_t)atoi(op + 6) * 1000);
    printf("sleep\n");
  } else {
    printf("%s %d\n", op, call_op(op));
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc > 1) {
    for (int i = 1; i < argc; ++i) run(argv[i]);
    return 0;
  }
  char line[512];
  while (fgets(line, sizeof(line), stdin) != NULL) {
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '\0') continue;
    if (!strcmp(line, "quit")) break;
    run(line);
  }
  return 0;
}
