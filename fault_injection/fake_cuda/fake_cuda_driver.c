// SPDX-License-Identifier: Apache-2.0
// A fake CUDA driver (libcuda.so.1 look-alike) backed by host memory, for CPU-only tests.
//
// It exports the versioned driver symbols llm_datadist loads (csrc/common/cuda_driver.h) plus a
// few neighbours a fault-injection shim hooks, with the real C signatures and CUresult values of
// CUDA 13. It is built only by the tests (tests/fake_cuda.py):
//   cc -O1 -shared -fPIC -o libcuda.so.1 fake_cuda_driver.c -pthread
// and selected with LLMDD_CUDA_LIBRARY=/path/to/libcuda.so.1. It is the project's one
// sanctioned fake: it lets the CUDA code paths (contexts, allocation, copies, IPC, OOM) run on
// machines without a GPU. It is not a simulator: there are no kernels, and "device" memory is
// ordinary host memory.
//
// Environment (read once, by cuInit):
//   LLMDD_FAKE_CUDA_DEVICES         number of devices, default 1, at most 16. "0" makes cuInit
//                                   return CUDA_ERROR_NO_DEVICE (100), like a host whose driver
//                                   sees no GPU.
//   LLMDD_FAKE_CUDA_MEM_LIMIT       bytes of live allocations allowed per device (also the
//                                   reported total memory); an allocation beyond it returns
//                                   CUDA_ERROR_OUT_OF_MEMORY (2). Default 16 GiB (the pages are
//                                   only committed when touched).
//   LLMDD_FAKE_CUDA_DRIVER_VERSION  what cuDriverGetVersion reports, default 13000.
//
// Behaviour that mirrors the real driver, so that code passing here does not fail on a GPU:
//   * everything but cuDriverGetVersion/cuGetErrorName/cuGetErrorString needs cuInit first
//     (else CUDA_ERROR_NOT_INITIALIZED, 3);
//   * allocation, copies, streams and IPC opens need a current context (else
//     CUDA_ERROR_INVALID_CONTEXT, 201); the context is per thread; primary contexts are one
//     dummy object per device;
//   * cuMemFree_v2 needs the allocation's base pointer; cuPointerGetAttribute on memory the
//     driver does not know returns CUDA_ERROR_INVALID_VALUE (1);
//   * an IPC handle names the whole allocation, and opening it gives the allocation base;
//     opening a handle in the process that exported it returns CUDA_ERROR_INVALID_CONTEXT.
//
// Memory: each allocation is its own memfd (memfd_create + ftruncate + mmap MAP_SHARED), so a
// 64-byte IPC handle can carry (pid, fd, size, offset) and another process can open
// /proc/<pid>/fd/<fd> and map the same pages (falling back to pidfd_getfd). Copies are memcpy;
// "async" copies complete before they return; streams are dummies. The allocation table is
// guarded by one mutex.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct {
  char reserved[64];
} CUipcMemHandle;

enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_MAP_FAILED = 205,
  CUDA_ERROR_OPERATING_SYSTEM = 304,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
};

enum {
  CU_POINTER_ATTRIBUTE_CONTEXT = 1,
  CU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
  CU_POINTER_ATTRIBUTE_DEVICE_POINTER = 3,
  CU_POINTER_ATTRIBUTE_HOST_POINTER = 4,
  CU_POINTER_ATTRIBUTE_BUFFER_ID = 7,
  CU_POINTER_ATTRIBUTE_IS_MANAGED = 8,
  CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
  CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE = 10,
  CU_POINTER_ATTRIBUTE_RANGE_START_ADDR = 11,
  CU_POINTER_ATTRIBUTE_RANGE_SIZE = 12,
  CU_POINTER_ATTRIBUTE_MAPPED = 13,
};

enum { CU_MEMORYTYPE_DEVICE = 2 };

#define FAKE_MAX_DEVICES 16
#define FAKE_DEFAULT_TOTAL_MEM (16ULL << 30)
#define FAKE_HANDLE_MAGIC "LLMDDFK1"

// ---- Devices and contexts ----

struct CUctx_st {
  uint32_t magic;
  int device;
};
#define FAKE_CTX_MAGIC 0xC7C7C7C7u

struct CUstream_st {
  uint32_t magic;
  int device;
};
#define FAKE_STREAM_MAGIC 0x57575757u

static pthread_once_t g_init_once = PTHREAD_ONCE_INIT;
static int g_initialized = 0;
static CUresult g_init_result = CUDA_ERROR_NOT_INITIALIZED;
static int g_device_count = 1;
static unsigned long long g_mem_limit = FAKE_DEFAULT_TOTAL_MEM;
static struct CUctx_st g_contexts[FAKE_MAX_DEVICES];
static int g_primary_refs[FAKE_MAX_DEVICES];
static __thread CUcontext t_current = NULL;

// ---- Allocation table ----

enum { KIND_ALLOC = 1, KIND_IPC = 2 };

typedef struct {
  uintptr_t base;
  size_t size;
  int fd;  // the memfd (KIND_ALLOC) or -1 (KIND_IPC: closed after mapping)
  int device;
  int kind;
  unsigned long long id;
  // KIND_IPC: which exported allocation this maps, and how many opens are outstanding.
  int peer_pid;
  unsigned long long peer_id;
  int ipc_refs;
} Allocation;

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static Allocation *g_allocs = NULL;
static size_t g_alloc_count = 0;
static size_t g_alloc_cap = 0;
static unsigned long long g_next_id = 1;
static unsigned long long g_used[FAKE_MAX_DEVICES];

// Index of the allocation containing [addr, addr+len), or -1. Caller holds g_mu.
static long find_locked(uintptr_t addr, size_t len) {
  for (size_t i = 0; i < g_alloc_count; ++i) {
    const Allocation *a = &g_allocs[i];
    if (addr >= a->base && addr - a->base < a->size && len <= a->size - (addr - a->base)) {
      return (long)i;
    }
  }
  return -1;
}

static int add_locked(const Allocation *a) {
  if (g_alloc_count == g_alloc_cap) {
    size_t cap = g_alloc_cap ? g_alloc_cap * 2 : 64;
    Allocation *grown = (Allocation *)realloc(g_allocs, cap * sizeof(Allocation));
    if (grown == NULL) return 0;
    g_allocs = grown;
    g_alloc_cap = cap;
  }
  g_allocs[g_alloc_count++] = *a;
  return 1;
}

static void remove_locked(long index) {
  g_allocs[index] = g_allocs[g_alloc_count - 1];
  --g_alloc_count;
}

// ---- Helpers ----

static unsigned long long env_ull(const char *name, unsigned long long fallback) {
  const char *s = getenv(name);
  if (s == NULL || *s == '\0') return fallback;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0') return fallback;
  return v;
}

static void init_once(void) {
  unsigned long long devices = env_ull("LLMDD_FAKE_CUDA_DEVICES", 1);
  if (devices > FAKE_MAX_DEVICES) devices = FAKE_MAX_DEVICES;
  g_device_count = (int)devices;
  g_mem_limit = env_ull("LLMDD_FAKE_CUDA_MEM_LIMIT", FAKE_DEFAULT_TOTAL_MEM);
  if (g_mem_limit == 0) g_mem_limit = FAKE_DEFAULT_TOTAL_MEM;
  for (int i = 0; i < FAKE_MAX_DEVICES; ++i) {
    g_contexts[i].magic = FAKE_CTX_MAGIC;
    g_contexts[i].device = i;
  }
  g_init_result = g_device_count == 0 ? CUDA_ERROR_NO_DEVICE : CUDA_SUCCESS;
  g_initialized = g_init_result == CUDA_SUCCESS;
}

#define REQUIRE_INIT()                                      \
  do {                                                      \
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;  \
  } while (0)

// The current context's device, or -1 when there is none.
static int current_device(void) {
  return t_current == NULL ? -1 : t_current->device;
}

#define REQUIRE_CONTEXT(dev_var)                               \
  int dev_var = current_device();                              \
  do {                                                         \
    if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;     \
    if (dev_var < 0) return CUDA_ERROR_INVALID_CONTEXT;        \
  } while (0)

static int valid_context(CUcontext ctx) {
  for (int i = 0; i < g_device_count; ++i) {
    if (ctx == &g_contexts[i]) return 1;
  }
  return 0;
}

static int valid_stream(CUstream s) {
  // NULL is the legacy default stream; 1 and 2 are CU_STREAM_LEGACY / CU_STREAM_PER_THREAD.
  if (s == NULL || (uintptr_t)s == 1 || (uintptr_t)s == 2) return 1;
  return s->magic == FAKE_STREAM_MAGIC;
}

// Whether [p, p+n) lies inside one device allocation or IPC mapping.
static int is_device_range(CUdeviceptr p, size_t n) {
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)p, n);
  pthread_mutex_unlock(&g_mu);
  return i >= 0;
}

// ---- Errors ----

typedef struct {
  CUresult code;
  const char *name;
  const char *text;
} ErrorRow;

static const ErrorRow kErrors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE", "CUDA-capable device(s) is/are busy or unavailable"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {205, "CUDA_ERROR_MAP_FAILED", "mapping of buffer object failed"},
    {214, "CUDA_ERROR_ECC_UNCORRECTABLE", "uncorrectable ECC error encountered"},
    {220, "CUDA_ERROR_NVLINK_UNCORRECTABLE", "uncorrectable NVLink error detected during the execution"},
    {226, "CUDA_ERROR_CONTAINED", "container error"},
    {304, "CUDA_ERROR_OPERATING_SYSTEM", "OS call failed or operation not supported on this OS"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {702, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
    {710, "CUDA_ERROR_ASSERT", "device-side assert triggered"},
    {714, "CUDA_ERROR_HARDWARE_STACK_ERROR", "hardware stack error"},
    {715, "CUDA_ERROR_ILLEGAL_INSTRUCTION", "an illegal instruction was encountered"},
    {716, "CUDA_ERROR_MISALIGNED_ADDRESS", "misaligned address"},
    {717, "CUDA_ERROR_INVALID_ADDRESS_SPACE", "operation not supported on global/shared address space"},
    {718, "CUDA_ERROR_INVALID_PC", "invalid program counter"},
    {719, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {721, "CUDA_ERROR_TENSOR_MEMORY_LEAK", "tensor memory not completely freed"},
    {802, "CUDA_ERROR_SYSTEM_NOT_READY", "system not yet initialized"},
    {810, "CUDA_ERROR_MPS_CLIENT_TERMINATED", "the MPS client has been terminated by the server"},
    {909, "CUDA_ERROR_TIMEOUT", "timeout reached before the operation completed"},
    {911, "CUDA_ERROR_EXTERNAL_DEVICE", "error in an external device"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static const ErrorRow *find_error(CUresult code) {
  for (size_t i = 0; i < sizeof(kErrors) / sizeof(kErrors[0]); ++i) {
    if (kErrors[i].code == code) return &kErrors[i];
  }
  return NULL;
}

EXPORT CUresult cuGetErrorName(CUresult error, const char **pStr) {
  if (pStr == NULL) return CUDA_ERROR_INVALID_VALUE;
  const ErrorRow *row = find_error(error);
  *pStr = row ? row->name : NULL;
  return row ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult cuGetErrorString(CUresult error, const char **pStr) {
  if (pStr == NULL) return CUDA_ERROR_INVALID_VALUE;
  const ErrorRow *row = find_error(error);
  *pStr = row ? row->text : NULL;
  return row ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

// ---- Initialization and devices ----

EXPORT CUresult cuInit(unsigned int Flags) {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_once(&g_init_once, init_once);
  return g_init_result;
}

EXPORT CUresult cuDriverGetVersion(int *driverVersion) {
  if (driverVersion == NULL) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = (int)env_ull("LLMDD_FAKE_CUDA_DRIVER_VERSION", 13000);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetCount(int *count) {
  REQUIRE_INIT();
  if (count == NULL) return CUDA_ERROR_INVALID_VALUE;
  *count = g_device_count;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal) {
  REQUIRE_INIT();
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal < 0 || ordinal >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev) {
  REQUIRE_INIT();
  if (name == NULL || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (dev < 0 || dev >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  snprintf(name, (size_t)len, "Fake CUDA Device %d", dev);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
  REQUIRE_INIT();
  if (bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (dev < 0 || dev >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = (size_t)g_mem_limit;
  return CUDA_SUCCESS;
}

// ---- Contexts ----

EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
  REQUIRE_INIT();
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (dev < 0 || dev >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  __atomic_add_fetch(&g_primary_refs[dev], 1, __ATOMIC_SEQ_CST);
  *pctx = &g_contexts[dev];
  return CUDA_SUCCESS;
}

EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  REQUIRE_INIT();
  if (dev < 0 || dev >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  int refs = __atomic_load_n(&g_primary_refs[dev], __ATOMIC_SEQ_CST);
  while (refs > 0 && !__atomic_compare_exchange_n(&g_primary_refs[dev], &refs, refs - 1, 0,
                                                  __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return refs > 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
}

EXPORT CUresult cuCtxSetCurrent(CUcontext ctx) {
  REQUIRE_INIT();
  if (ctx != NULL && !valid_context(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  t_current = ctx;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetCurrent(CUcontext *pctx) {
  REQUIRE_INIT();
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  *pctx = t_current;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxGetDevice(CUdevice *device) {
  REQUIRE_CONTEXT(dev);
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  *device = dev;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxSynchronize(void) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  return CUDA_SUCCESS;
}

// ---- Memory ----

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
  REQUIRE_CONTEXT(dev);
  if (dptr == NULL || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;

  pthread_mutex_lock(&g_mu);
  if (bytesize > g_mem_limit || g_used[dev] > g_mem_limit - bytesize) {
    pthread_mutex_unlock(&g_mu);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  g_used[dev] += bytesize;  // reserve before the slow part, give back on failure
  unsigned long long id = g_next_id++;
  pthread_mutex_unlock(&g_mu);

  CUresult result = CUDA_ERROR_OUT_OF_MEMORY;
  void *p = MAP_FAILED;
  int fd = memfd_create("llmdd-fake-cuda", MFD_CLOEXEC);
  if (fd >= 0 && ftruncate(fd, (off_t)bytesize) == 0) {
    p = mmap(NULL, bytesize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (p != MAP_FAILED) {
    Allocation a;
    memset(&a, 0, sizeof(a));
    a.base = (uintptr_t)p;
    a.size = bytesize;
    a.fd = fd;
    a.device = dev;
    a.kind = KIND_ALLOC;
    a.id = id;
    pthread_mutex_lock(&g_mu);
    int added = add_locked(&a);
    if (!added) g_used[dev] -= bytesize;
    pthread_mutex_unlock(&g_mu);
    if (added) {
      *dptr = (CUdeviceptr)(uintptr_t)p;
      return CUDA_SUCCESS;
    }
    munmap(p, bytesize);
  } else {
    pthread_mutex_lock(&g_mu);
    g_used[dev] -= bytesize;
    pthread_mutex_unlock(&g_mu);
  }
  if (fd >= 0) close(fd);
  return result;
}

EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr) {
  REQUIRE_INIT();
  if (dptr == 0) return CUDA_SUCCESS;
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)dptr, 1);
  if (i < 0 || g_allocs[i].base != (uintptr_t)dptr || g_allocs[i].kind != KIND_ALLOC) {
    pthread_mutex_unlock(&g_mu);
    return CUDA_ERROR_INVALID_VALUE;
  }
  Allocation a = g_allocs[i];
  remove_locked(i);
  g_used[a.device] -= a.size;
  pthread_mutex_unlock(&g_mu);
  munmap((void *)a.base, a.size);
  close(a.fd);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total_bytes) {
  REQUIRE_CONTEXT(dev);
  if (free_bytes == NULL || total_bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long total = g_mem_limit;
  pthread_mutex_lock(&g_mu);
  unsigned long long used = g_used[dev];
  pthread_mutex_unlock(&g_mu);
  *total_bytes = (size_t)total;
  *free_bytes = (size_t)(used >= total ? 0 : total - used);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *pbase, size_t *psize, CUdeviceptr dptr) {
  REQUIRE_INIT();
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)dptr, 1);
  Allocation a;
  if (i >= 0) a = g_allocs[i];
  pthread_mutex_unlock(&g_mu);
  if (i < 0) return CUDA_ERROR_NOT_FOUND;
  if (pbase != NULL) *pbase = (CUdeviceptr)a.base;
  if (psize != NULL) *psize = a.size;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuPointerGetAttribute(void *data, int attribute, CUdeviceptr ptr) {
  REQUIRE_INIT();
  if (data == NULL) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)ptr, 1);
  Allocation a;
  if (i >= 0) a = g_allocs[i];
  pthread_mutex_unlock(&g_mu);
  if (i < 0) return CUDA_ERROR_INVALID_VALUE;  // not memory this driver knows
  switch (attribute) {
    case CU_POINTER_ATTRIBUTE_CONTEXT:
      *(CUcontext *)data = &g_contexts[a.device];
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
      *(unsigned int *)data = CU_MEMORYTYPE_DEVICE;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
      *(CUdeviceptr *)data = ptr;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_BUFFER_ID:
      *(unsigned long long *)data = a.id;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
      *(int *)data = a.device;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR:
      *(CUdeviceptr *)data = (CUdeviceptr)a.base;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_RANGE_SIZE:
      *(size_t *)data = a.size;
      return CUDA_SUCCESS;
    // Booleans are written as one byte: callers pass bool or a zeroed int.
    case CU_POINTER_ATTRIBUTE_IS_MANAGED:
      *(unsigned char *)data = 0;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
      *(unsigned char *)data = a.kind == KIND_ALLOC;
      return CUDA_SUCCESS;
    case CU_POINTER_ATTRIBUTE_MAPPED:
      *(unsigned char *)data = 1;
      return CUDA_SUCCESS;
    default:  // HOST_POINTER (device memory has none) and attributes not modelled
      return CUDA_ERROR_INVALID_VALUE;
  }
}

// ---- Copies ----

EXPORT CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (dst == 0 || src == 0) return CUDA_ERROR_INVALID_VALUE;
  memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyAsync(CUdeviceptr dst, CUdeviceptr src, size_t ByteCount,
                              CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemcpy(dst, src, ByteCount);
}

EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (srcHost == NULL || !is_device_range(dstDevice, ByteCount)) return CUDA_ERROR_INVALID_VALUE;
  memcpy((void *)(uintptr_t)dstDevice, srcHost, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (dstHost == NULL || !is_device_range(srcDevice, ByteCount)) return CUDA_ERROR_INVALID_VALUE;
  memcpy(dstHost, (const void *)(uintptr_t)srcDevice, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (!is_device_range(dstDevice, ByteCount) || !is_device_range(srcDevice, ByteCount)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  memmove((void *)(uintptr_t)dstDevice, (const void *)(uintptr_t)srcDevice, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void *srcHost,
                                     size_t ByteCount, CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemcpyHtoD_v2(dstDevice, srcHost, ByteCount);
}

EXPORT CUresult cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount,
                                     CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemcpyDtoH_v2(dstHost, srcDevice, ByteCount);
}

EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice,
                                     size_t ByteCount, CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemcpyDtoD_v2(dstDevice, srcDevice, ByteCount);
}

EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (N == 0) return CUDA_SUCCESS;
  if (!is_device_range(dstDevice, N)) return CUDA_ERROR_INVALID_VALUE;
  memset((void *)(uintptr_t)dstDevice, uc, N);
  return CUDA_SUCCESS;
}

// ---- Streams ----

EXPORT CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags) {
  REQUIRE_CONTEXT(dev);
  if (phStream == NULL || Flags > 1) return CUDA_ERROR_INVALID_VALUE;
  CUstream s = (CUstream)calloc(1, sizeof(struct CUstream_st));
  if (s == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  s->magic = FAKE_STREAM_MAGIC;
  s->device = dev;
  *phStream = s;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamDestroy_v2(CUstream hStream) {
  REQUIRE_INIT();
  if (hStream == NULL || (uintptr_t)hStream <= 2 || hStream->magic != FAKE_STREAM_MAGIC) {
    return CUDA_ERROR_INVALID_HANDLE;
  }
  hStream->magic = 0;
  free(hStream);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamSynchronize(CUstream hStream) {
  REQUIRE_INIT();
  return valid_stream(hStream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuStreamQuery(CUstream hStream) {
  REQUIRE_INIT();
  return valid_stream(hStream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// ---- IPC ----

typedef struct {
  char magic[8];
  int32_t pid;
  int32_t fd;
  uint64_t size;
  uint64_t offset;  // of the allocation within the fd: always 0 (one memfd per allocation)
  int32_t device;
  uint32_t reserved;
  uint64_t id;
} FakeIpcHandle;

_Static_assert(sizeof(FakeIpcHandle) <= sizeof(CUipcMemHandle), "handle must fit in 64 bytes");

EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *pHandle, CUdeviceptr dptr) {
  REQUIRE_INIT();
  if (pHandle == NULL) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)dptr, 1);
  Allocation a;
  if (i >= 0) a = g_allocs[i];
  pthread_mutex_unlock(&g_mu);
  if (i < 0 || a.kind != KIND_ALLOC) return CUDA_ERROR_INVALID_VALUE;
  FakeIpcHandle h;
  memset(&h, 0, sizeof(h));
  memcpy(h.magic, FAKE_HANDLE_MAGIC, sizeof(h.magic));
  h.pid = (int32_t)getpid();
  h.fd = a.fd;
  h.size = a.size;
  h.offset = 0;
  h.device = a.device;
  h.id = a.id;
  memset(pHandle, 0, sizeof(*pHandle));
  memcpy(pHandle->reserved, &h, sizeof(h));
  return CUDA_SUCCESS;
}

// Opens the exporter's memfd: /proc/<pid>/fd/<fd> (same user), else pidfd_getfd (needs
// ptrace permission). Returns an fd or -1.
static int open_peer_fd(int pid, int fd) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
  int local = open(path, O_RDWR | O_CLOEXEC);
  if (local >= 0) return local;
#if defined(SYS_pidfd_open) && defined(SYS_pidfd_getfd)
  int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (pidfd >= 0) {
    local = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
    close(pidfd);
    if (local >= 0) return local;
  }
#endif
  return -1;
}

EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *pdptr, CUipcMemHandle handle,
                                      unsigned int Flags) {
  REQUIRE_CONTEXT(dev);
  if (pdptr == NULL || Flags > 1) return CUDA_ERROR_INVALID_VALUE;
  FakeIpcHandle h;
  memcpy(&h, handle.reserved, sizeof(h));
  if (memcmp(h.magic, FAKE_HANDLE_MAGIC, sizeof(h.magic)) != 0 || h.size == 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  // The real driver refuses handles exported by the calling process.
  if (h.pid == (int32_t)getpid()) return CUDA_ERROR_INVALID_CONTEXT;

  // Opening the same allocation again shares the mapping (reference counted).
  pthread_mutex_lock(&g_mu);
  for (size_t i = 0; i < g_alloc_count; ++i) {
    Allocation *a = &g_allocs[i];
    if (a->kind == KIND_IPC && a->peer_pid == h.pid && a->peer_id == h.id) {
      ++a->ipc_refs;
      *pdptr = (CUdeviceptr)a->base;
      pthread_mutex_unlock(&g_mu);
      return CUDA_SUCCESS;
    }
  }
  pthread_mutex_unlock(&g_mu);

  int fd = open_peer_fd(h.pid, h.fd);
  if (fd < 0) return CUDA_ERROR_INVALID_HANDLE;  // exporter gone, or not ours to open
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < h.offset + h.size) {
    close(fd);
    return CUDA_ERROR_INVALID_HANDLE;  // the fd number now names something else
  }
  void *p = mmap(NULL, (size_t)h.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)h.offset);
  close(fd);  // the mapping keeps the pages alive
  if (p == MAP_FAILED) return CUDA_ERROR_MAP_FAILED;

  Allocation a;
  memset(&a, 0, sizeof(a));
  a.base = (uintptr_t)p;
  a.size = (size_t)h.size;
  a.fd = -1;
  a.device = dev;
  a.kind = KIND_IPC;
  a.peer_pid = h.pid;
  a.peer_id = h.id;
  a.ipc_refs = 1;
  pthread_mutex_lock(&g_mu);
  a.id = g_next_id++;
  int added = add_locked(&a);
  pthread_mutex_unlock(&g_mu);
  if (!added) {
    munmap(p, (size_t)h.size);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *pdptr = (CUdeviceptr)(uintptr_t)p;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr dptr) {
  REQUIRE_INIT();
  pthread_mutex_lock(&g_mu);
  long i = find_locked((uintptr_t)dptr, 1);
  if (i < 0 || g_allocs[i].kind != KIND_IPC || g_allocs[i].base != (uintptr_t)dptr) {
    pthread_mutex_unlock(&g_mu);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (--g_allocs[i].ipc_refs > 0) {
    pthread_mutex_unlock(&g_mu);
    return CUDA_SUCCESS;
  }
  Allocation a = g_allocs[i];
  remove_locked(i);
  pthread_mutex_unlock(&g_mu);
  munmap((void *)a.base, a.size);
  return CUDA_SUCCESS;
}

// ---- Added for the fault-injection tests (fault_injection/cuda_fault_shim.c) ----
// The entry points the shim intercepts that the core does not use, so that every hook can be
// exercised on a CPU-only machine, plus cuGetProcAddress, through which a CUDA runtime reaches
// the driver. Fake semantics:
//   * a CUfunction is a host function `void fn(void **kernelParams)` and a launch runs it once,
//     synchronously (the fake has no kernels); a CUgraphExec is a host function `void fn(void)`
//     and cuGraphLaunch runs it once (a graph replay);
//   * events are any non-NULL pointer and are always complete; a push makes the context
//     current (no context stack);
//   * cuGetProcAddress[_v2] maps a base name ("cuMemAlloc") to the newest exported version
//     (cuMemAlloc_v2) and, with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, to its
//     _ptsz/_ptds twin. It returns the exported functions' own addresses, taken through hidden
//     aliases: like a real driver it cannot hand out an LD_PRELOAD shim's definitions itself,
//     so a shim has to intercept cuGetProcAddress to see calls made through it.
typedef struct CUevent_st *CUevent;
typedef struct CUfunc_st *CUfunction;
typedef struct CUgraphExec_st *CUgraphExec;
typedef unsigned long long cuuint64_t;
typedef void (*FakeKernel)(void **params);
typedef void (*FakeGraph)(void);

enum { CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM = 1 << 1 };
enum {
  CU_GET_PROC_ADDRESS_SUCCESS = 0,
  CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND = 1,
};

static CUresult create_context(CUcontext *pctx, CUdevice dev) {
  REQUIRE_INIT();
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (dev < 0 || dev >= g_device_count) return CUDA_ERROR_INVALID_DEVICE;
  *pctx = &g_contexts[dev];
  t_current = *pctx;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev) {
  (void)flags;
  return create_context(pctx, dev);
}

EXPORT CUresult cuCtxCreate_v3(CUcontext *pctx, void *paramsArray, int numParams,
                               unsigned int flags, CUdevice dev) {
  (void)paramsArray;
  (void)numParams;
  (void)flags;
  return create_context(pctx, dev);
}

EXPORT CUresult cuCtxCreate_v4(CUcontext *pctx, void *ctxCreateParams, unsigned int flags,
                               CUdevice dev) {
  (void)ctxCreateParams;
  (void)flags;
  return create_context(pctx, dev);
}

EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx) {
  REQUIRE_INIT();
  if (ctx == NULL || !valid_context(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  t_current = ctx;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemAllocAsync(CUdeviceptr *dptr, size_t bytesize, CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemAlloc_v2(dptr, bytesize);
}

EXPORT CUresult cuMemFreeAsync(CUdeviceptr dptr, CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemFree_v2(dptr);
}

EXPORT CUresult cuMemcpyPeer(CUdeviceptr dstDevice, CUcontext dstContext, CUdeviceptr srcDevice,
                             CUcontext srcContext, size_t ByteCount) {
  REQUIRE_INIT();
  if (!valid_context(dstContext) || !valid_context(srcContext)) return CUDA_ERROR_INVALID_CONTEXT;
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (!is_device_range(dstDevice, ByteCount) || !is_device_range(srcDevice, ByteCount)) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  memmove((void *)(uintptr_t)dstDevice, (const void *)(uintptr_t)srcDevice, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuMemcpyPeerAsync(CUdeviceptr dstDevice, CUcontext dstContext,
                                  CUdeviceptr srcDevice, CUcontext srcContext, size_t ByteCount,
                                  CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemcpyPeer(dstDevice, dstContext, srcDevice, srcContext, ByteCount);
}

EXPORT CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N,
                                CUstream hStream) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return cuMemsetD8_v2(dstDevice, uc, N);
}

EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
                               unsigned int gridDimZ, unsigned int blockDimX,
                               unsigned int blockDimY, unsigned int blockDimZ,
                               unsigned int sharedMemBytes, CUstream hStream, void **kernelParams,
                               void **extra) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  (void)sharedMemBytes;
  (void)extra;
  if (f == NULL) return CUDA_ERROR_INVALID_HANDLE;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  if ((unsigned long long)gridDimX * gridDimY * gridDimZ * blockDimX * blockDimY * blockDimZ == 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  ((FakeKernel)(void *)f)(kernelParams);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuLaunchKernelEx(const void *config, CUfunction f, void **kernelParams,
                                 void **extra) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  (void)extra;
  if (config == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (f == NULL) return CUDA_ERROR_INVALID_HANDLE;
  ((FakeKernel)(void *)f)(kernelParams);
  return CUDA_SUCCESS;
}

EXPORT CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream) {
  REQUIRE_CONTEXT(dev);
  (void)dev;
  if (hGraphExec == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  ((FakeGraph)(void *)hGraphExec)();
  return CUDA_SUCCESS;
}

EXPORT CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  REQUIRE_INIT();
  (void)Flags;
  if (!valid_stream(hStream) || hEvent == NULL) return CUDA_ERROR_INVALID_HANDLE;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
  REQUIRE_INIT();
  if (!valid_stream(hStream) || hEvent == NULL) return CUDA_ERROR_INVALID_HANDLE;
  return CUDA_SUCCESS;
}

EXPORT CUresult cuEventSynchronize(CUevent hEvent) {
  REQUIRE_INIT();
  return hEvent != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult cuEventQuery(CUevent hEvent) {
  REQUIRE_INIT();
  return hEvent != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

// Per-thread-default-stream twins: the fake has no default stream semantics to differ in.
#define FAKE_TWIN(twin, base, params, args) \
  EXPORT CUresult twin params { return base args; }
FAKE_TWIN(cuMemAllocAsync_ptsz, cuMemAllocAsync, (CUdeviceptr *p, size_t n, CUstream s), (p, n, s))
FAKE_TWIN(cuMemFreeAsync_ptsz, cuMemFreeAsync, (CUdeviceptr p, CUstream s), (p, s))
FAKE_TWIN(cuMemcpy_ptds, cuMemcpy, (CUdeviceptr d, CUdeviceptr s, size_t n), (d, s, n))
FAKE_TWIN(cuMemcpyAsync_ptsz, cuMemcpyAsync, (CUdeviceptr d, CUdeviceptr s, size_t n, CUstream h),
          (d, s, n, h))
FAKE_TWIN(cuMemcpyPeer_ptds, cuMemcpyPeer,
          (CUdeviceptr d, CUcontext dc, CUdeviceptr s, CUcontext sc, size_t n), (d, dc, s, sc, n))
FAKE_TWIN(cuMemcpyPeerAsync_ptsz, cuMemcpyPeerAsync,
          (CUdeviceptr d, CUcontext dc, CUdeviceptr s, CUcontext sc, size_t n, CUstream h),
          (d, dc, s, sc, n, h))
FAKE_TWIN(cuMemcpyHtoD_v2_ptds, cuMemcpyHtoD_v2, (CUdeviceptr d, const void *s, size_t n), (d, s, n))
FAKE_TWIN(cuMemcpyDtoH_v2_ptds, cuMemcpyDtoH_v2, (void *d, CUdeviceptr s, size_t n), (d, s, n))
FAKE_TWIN(cuMemcpyDtoD_v2_ptds, cuMemcpyDtoD_v2, (CUdeviceptr d, CUdeviceptr s, size_t n), (d, s, n))
FAKE_TWIN(cuMemcpyHtoDAsync_v2_ptsz, cuMemcpyHtoDAsync_v2,
          (CUdeviceptr d, const void *s, size_t n, CUstream h), (d, s, n, h))
FAKE_TWIN(cuMemcpyDtoHAsync_v2_ptsz, cuMemcpyDtoHAsync_v2,
          (void *d, CUdeviceptr s, size_t n, CUstream h), (d, s, n, h))
FAKE_TWIN(cuMemcpyDtoDAsync_v2_ptsz, cuMemcpyDtoDAsync_v2,
          (CUdeviceptr d, CUdeviceptr s, size_t n, CUstream h), (d, s, n, h))
FAKE_TWIN(cuMemsetD8_v2_ptds, cuMemsetD8_v2, (CUdeviceptr d, unsigned char v, size_t n), (d, v, n))
FAKE_TWIN(cuMemsetD8Async_ptsz, cuMemsetD8Async, (CUdeviceptr d, unsigned char v, size_t n, CUstream h),
          (d, v, n, h))
FAKE_TWIN(cuLaunchKernel_ptsz, cuLaunchKernel,
          (CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
           unsigned int by, unsigned int bz, unsigned int sh, CUstream s, void **p, void **e),
          (f, gx, gy, gz, bx, by, bz, sh, s, p, e))
FAKE_TWIN(cuLaunchKernelEx_ptsz, cuLaunchKernelEx,
          (const void *c, CUfunction f, void **p, void **e), (c, f, p, e))
FAKE_TWIN(cuGraphLaunch_ptsz, cuGraphLaunch, (CUgraphExec g, CUstream s), (g, s))
FAKE_TWIN(cuStreamSynchronize_ptsz, cuStreamSynchronize, (CUstream s), (s))
FAKE_TWIN(cuStreamQuery_ptsz, cuStreamQuery, (CUstream s), (s))
FAKE_TWIN(cuStreamWaitEvent_ptsz, cuStreamWaitEvent, (CUstream s, CUevent e, unsigned int f), (s, e, f))
FAKE_TWIN(cuEventRecord_ptsz, cuEventRecord, (CUevent e, CUstream s), (e, s))

// ---- cuGetProcAddress ----
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags, int *symbolStatus);
EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                 cuuint64_t flags) {
  return cuGetProcAddress_v2(symbol, pfn, cudaVersion, flags, NULL);
}

// Addresses of the exported functions that an LD_PRELOAD library cannot replace.
#define FAKE_EXPORTS(X)                                                                          \
  X(cuGetErrorName) X(cuGetErrorString) X(cuInit) X(cuDriverGetVersion) X(cuDeviceGetCount)      \
  X(cuDeviceGet) X(cuDeviceGetName) X(cuDeviceTotalMem_v2) X(cuDevicePrimaryCtxRetain)           \
  X(cuDevicePrimaryCtxRelease_v2) X(cuCtxCreate_v4) X(cuCtxSetCurrent) X(cuCtxGetCurrent)        \
  X(cuCtxGetDevice) X(cuCtxPushCurrent_v2) X(cuCtxSynchronize) X(cuMemAlloc_v2)                  \
  X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz) X(cuMemFree_v2) X(cuMemFreeAsync)                   \
  X(cuMemFreeAsync_ptsz) X(cuMemGetInfo_v2) X(cuMemGetAddressRange_v2) X(cuPointerGetAttribute)  \
  X(cuMemcpy) X(cuMemcpy_ptds) X(cuMemcpyAsync) X(cuMemcpyAsync_ptsz) X(cuMemcpyPeer)            \
  X(cuMemcpyPeer_ptds) X(cuMemcpyPeerAsync) X(cuMemcpyPeerAsync_ptsz) X(cuMemcpyHtoD_v2)         \
  X(cuMemcpyHtoD_v2_ptds) X(cuMemcpyDtoH_v2) X(cuMemcpyDtoH_v2_ptds) X(cuMemcpyDtoD_v2)          \
  X(cuMemcpyDtoD_v2_ptds) X(cuMemcpyHtoDAsync_v2) X(cuMemcpyHtoDAsync_v2_ptsz)                   \
  X(cuMemcpyDtoHAsync_v2) X(cuMemcpyDtoHAsync_v2_ptsz) X(cuMemcpyDtoDAsync_v2)                   \
  X(cuMemcpyDtoDAsync_v2_ptsz) X(cuMemsetD8_v2) X(cuMemsetD8_v2_ptds) X(cuMemsetD8Async)         \
  X(cuMemsetD8Async_ptsz) X(cuStreamCreate) X(cuStreamDestroy_v2) X(cuStreamSynchronize)         \
  X(cuStreamSynchronize_ptsz) X(cuStreamQuery) X(cuStreamQuery_ptsz) X(cuStreamWaitEvent)        \
  X(cuStreamWaitEvent_ptsz) X(cuEventRecord) X(cuEventRecord_ptsz) X(cuEventSynchronize)         \
  X(cuEventQuery) X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx)                   \
  X(cuLaunchKernelEx_ptsz) X(cuGraphLaunch) X(cuGraphLaunch_ptsz) X(cuIpcGetMemHandle)           \
  X(cuIpcOpenMemHandle_v2) X(cuIpcCloseMemHandle) X(cuGetProcAddress_v2)
#define FAKE_LOCAL(name) \
  extern __typeof__(name) fake_local_##name __attribute__((alias(#name), visibility("hidden")));
FAKE_EXPORTS(FAKE_LOCAL)
#undef FAKE_LOCAL

typedef struct {
  const char *symbol;  // what callers ask for: the base name
  void *fn;
  void *per_thread;  // with CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, when it differs
} ProcRow;

#define PROC(sym, fn) {sym, (void *)&fake_local_##fn, NULL}
#define PROC_PT(sym, fn, pt) {sym, (void *)&fake_local_##fn, (void *)&fake_local_##pt}
static const ProcRow kProcs[] = {
    PROC("cuGetErrorName", cuGetErrorName),
    PROC("cuGetErrorString", cuGetErrorString),
    PROC("cuInit", cuInit),
    PROC("cuDriverGetVersion", cuDriverGetVersion),
    PROC("cuDeviceGetCount", cuDeviceGetCount),
    PROC("cuDeviceGet", cuDeviceGet),
    PROC("cuDeviceGetName", cuDeviceGetName),
    PROC("cuDeviceTotalMem", cuDeviceTotalMem_v2),
    PROC("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain),
    PROC("cuDevicePrimaryCtxRelease", cuDevicePrimaryCtxRelease_v2),
    PROC("cuCtxCreate", cuCtxCreate_v4),
    PROC("cuCtxSetCurrent", cuCtxSetCurrent),
    PROC("cuCtxGetCurrent", cuCtxGetCurrent),
    PROC("cuCtxGetDevice", cuCtxGetDevice),
    PROC("cuCtxPushCurrent", cuCtxPushCurrent_v2),
    PROC("cuCtxSynchronize", cuCtxSynchronize),
    PROC("cuMemAlloc", cuMemAlloc_v2),
    PROC_PT("cuMemAllocAsync", cuMemAllocAsync, cuMemAllocAsync_ptsz),
    PROC("cuMemFree", cuMemFree_v2),
    PROC_PT("cuMemFreeAsync", cuMemFreeAsync, cuMemFreeAsync_ptsz),
    PROC("cuMemGetInfo", cuMemGetInfo_v2),
    PROC("cuMemGetAddressRange", cuMemGetAddressRange_v2),
    PROC("cuPointerGetAttribute", cuPointerGetAttribute),
    PROC_PT("cuMemcpy", cuMemcpy, cuMemcpy_ptds),
    PROC_PT("cuMemcpyAsync", cuMemcpyAsync, cuMemcpyAsync_ptsz),
    PROC_PT("cuMemcpyPeer", cuMemcpyPeer, cuMemcpyPeer_ptds),
    PROC_PT("cuMemcpyPeerAsync", cuMemcpyPeerAsync, cuMemcpyPeerAsync_ptsz),
    PROC_PT("cuMemcpyHtoD", cuMemcpyHtoD_v2, cuMemcpyHtoD_v2_ptds),
    PROC_PT("cuMemcpyDtoH", cuMemcpyDtoH_v2, cuMemcpyDtoH_v2_ptds),
    PROC_PT("cuMemcpyDtoD", cuMemcpyDtoD_v2, cuMemcpyDtoD_v2_ptds),
    PROC_PT("cuMemcpyHtoDAsync", cuMemcpyHtoDAsync_v2, cuMemcpyHtoDAsync_v2_ptsz),
    PROC_PT("cuMemcpyDtoHAsync", cuMemcpyDtoHAsync_v2, cuMemcpyDtoHAsync_v2_ptsz),
    PROC_PT("cuMemcpyDtoDAsync", cuMemcpyDtoDAsync_v2, cuMemcpyDtoDAsync_v2_ptsz),
    PROC_PT("cuMemsetD8", cuMemsetD8_v2, cuMemsetD8_v2_ptds),
    PROC_PT("cuMemsetD8Async", cuMemsetD8Async, cuMemsetD8Async_ptsz),
    PROC("cuStreamCreate", cuStreamCreate),
    PROC("cuStreamDestroy", cuStreamDestroy_v2),
    PROC_PT("cuStreamSynchronize", cuStreamSynchronize, cuStreamSynchronize_ptsz),
    PROC_PT("cuStreamQuery", cuStreamQuery, cuStreamQuery_ptsz),
    PROC_PT("cuStreamWaitEvent", cuStreamWaitEvent, cuStreamWaitEvent_ptsz),
    PROC_PT("cuEventRecord", cuEventRecord, cuEventRecord_ptsz),
    PROC("cuEventSynchronize", cuEventSynchronize),
    PROC("cuEventQuery", cuEventQuery),
    PROC_PT("cuLaunchKernel", cuLaunchKernel, cuLaunchKernel_ptsz),
    PROC_PT("cuLaunchKernelEx", cuLaunchKernelEx, cuLaunchKernelEx_ptsz),
    PROC_PT("cuGraphLaunch", cuGraphLaunch, cuGraphLaunch_ptsz),
    PROC("cuIpcGetMemHandle", cuIpcGetMemHandle),
    PROC("cuIpcOpenMemHandle", cuIpcOpenMemHandle_v2),
    PROC("cuIpcCloseMemHandle", cuIpcCloseMemHandle),
    PROC("cuGetProcAddress", cuGetProcAddress_v2),
};
#undef PROC
#undef PROC_PT

// The version argument is not modelled: every symbol resolves to its newest version.
EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                    cuuint64_t flags, int *symbolStatus) {
  (void)cudaVersion;
  if (symbol == NULL || pfn == NULL) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof(kProcs) / sizeof(kProcs[0]); ++i) {
    if (strcmp(kProcs[i].symbol, symbol) != 0) continue;
    *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && kProcs[i].per_thread != NULL
               ? kProcs[i].per_thread
               : kProcs[i].fn;
    if (symbolStatus != NULL) *symbolStatus = CU_GET_PROC_ADDRESS_SUCCESS;
    return CUDA_SUCCESS;
  }
  *pfn = NULL;
  if (symbolStatus != NULL) *symbolStatus = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  return CUDA_ERROR_NOT_FOUND;
}
