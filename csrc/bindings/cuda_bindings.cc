// SPDX-License-Identifier: Apache-2.0
// _core.cuda_info(): what the run-time CUDA loader found (csrc/common/cuda_driver.h).
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "common/cuda_driver.h"

namespace llm_datadist::bindings {

void RegisterCudaBindings(py::module_ &m) {
  m.def(
      "cuda_info",
      [] {
        cuda::CudaInfo info;
        {
          // The first call dlopens the driver and runs cuInit, which can take a while.
          py::gil_scoped_release release;
          info = cuda::Probe();
        }
        py::dict d;
        d["available"] = info.available;
        d["reason"] = info.reason;
        d["library_path"] = info.library_path;
        d["interposed"] = info.interposed;
        d["driver_version"] = info.driver_version;
        d["device_count"] = info.device_count;
        d["device_names"] = info.device_names;
        d["device_total_bytes"] = info.device_total_bytes;
        return d;
      },
      "Describes the CUDA driver loaded at run time: a dict with available, reason (why not, "
      "empty when available), library_path, interposed (an LD_PRELOAD shim is in front of the "
      "driver), driver_version, device_count, device_names, device_total_bytes. Never raises; "
      "the driver is looked up once per process (LLMDD_CUDA_LIBRARY overrides libcuda.so.1).");
}

}  // namespace llm_datadist::bindings
