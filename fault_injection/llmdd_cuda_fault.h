// SPDX-License-Identifier: Apache-2.0
// The C API that libllmdd_cuda_fault.so exports besides the CUDA entry points it intercepts.
// The manual (environment variables, control file, semantics) is the header comment of
// cuda_fault_shim.c; the Python wrapper is llm_datadist.fault_injection.
//
// Find these at run time with dlsym(RTLD_DEFAULT, "llmdd_fault_last_xid") and friends: they
// exist only in a process running under the shim (LD_PRELOAD), which is how llm_datadist's core
// names the XID in its errors without depending on the shim. All functions are thread-safe.
#ifndef LLMDD_CUDA_FAULT_H_
#define LLMDD_CUDA_FAULT_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// The XID of the fault most recently injected in this process; 0 when none was injected, or
// when the last one came from an explicit code (LLMDD_FAULT_CODE) with no XID.
int llmdd_fault_last_xid(void);

// The CUDA error code most recently injected in this process (0 when none). Lets a caller check
// that the error in its hands is the injected one before blaming the XID.
int llmdd_fault_last_code(void);

// How many intercepted calls have been failed by the shim in this process.
unsigned long long llmdd_fault_injections(void);

// "off", "armed", "fired" or "recovered": the state of the current fault.
const char *llmdd_fault_state(void);

// Replaces the settings of this process, live: `settings` holds control-file lines ("xid=48",
// "after_calls=10", ...) separated by newlines or ';', applied over the environment's settings
// (LLMDD_FAULT_*). NULL or "" goes back to the environment's settings. Every call starts a new
// fault episode (counters, timer, latch). Returns 0, or -1 when a setting is invalid (nothing
// changes; the reason goes to stderr and, when a JSON log is open, to the log).
int llmdd_fault_configure(const char *settings);

// Writes the effective settings as "key=value" lines into buf (always NUL-terminated when
// len > 0); returns the length the full text needs, like snprintf.
int llmdd_fault_settings(char *buf, size_t len);

// The XID table (fault_injection/cuda_fault_table.def), for llm_datadist.fault_injection.
typedef struct {
  int xid;
  int code;       // CUresult == cudaError_t value the intercepted calls return
  int init_code;  // what initialization calls return; 0: they keep working
  const char *mnemonic;
  const char *driver_name;   // CUDA_ERROR_...
  const char *runtime_name;  // cudaError...
  const char *init_driver_name;
  const char *catalog_action;
  const char *description;
} llmdd_fault_xid_t;

size_t llmdd_fault_xid_count(void);
const llmdd_fault_xid_t *llmdd_fault_xid_at(size_t index);  // NULL past the end

// The CUDA errors the shim names (the LLMDD_FAULT_ERROR rows).
typedef struct {
  int code;
  const char *driver_name;
  const char *runtime_name;
  const char *text;
} llmdd_fault_error_t;

size_t llmdd_fault_error_count(void);
const llmdd_fault_error_t *llmdd_fault_error_at(size_t index);

// The intercepted entry points, in table order; `api` is "driver" or "runtime", `kind` one of
// "init", "call", "report" (cudaGetLastError/cudaPeekAtLastError), "lookup" (cuGetProcAddress,
// cudaGetDriverEntryPoint).
size_t llmdd_fault_hook_count(void);
const char *llmdd_fault_hook_name(size_t index);
const char *llmdd_fault_hook_api(size_t index);
const char *llmdd_fault_hook_kind(size_t index);

#ifdef __cplusplus
}  // extern "C"
#endif

#endif  // LLMDD_CUDA_FAULT_H_
