// SPDX-License-Identifier: Apache-2.0
// _core.ucx_info(): what the run-time UCX loader found (csrc/transport/ucx/ucp_api.h).
// The one binding that names a transport: it is the doctor's probe of the UCX library itself
// (whether libucp loads, which UCX transports it sees), asked before and apart from any engine,
// with keys of its own that the doctor and tests read. Links and engines reach UCX only through
// its TransportProvider (csrc/transport/transport.h); a new transport needs no binding.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "transport/ucx/ucp_api.h"
#include "transport/ucx/ucx_process.h"

namespace llm_datadist::bindings {

void RegisterUcxBindings(py::module_ &m) {
  m.def(
      "ucx_info",
      [] {
        ucx::UcxInfo info;
        {
          // The first call dlopens libucp and creates a context to list its transports.
          py::gil_scoped_release release;
          info = ucx::Probe();
        }
        py::dict d;
        d["available"] = info.available;
        d["library"] = info.library_path;
        d["version"] = info.version;
        d["transports"] = info.transports;
        d["reason"] = info.reason;
        // What llmdd.Transport=auto does with it: UCX between hosts only where there is an RDMA
        // device and UCX lists an RDMA transport (csrc/transport/ucx.cc, EnableUcx, run by the ucx provider's Start).
        d["auto_between_hosts"] = info.available && ucx::HasRdmaDevice() && ucx::HasRdmaTransport(info.transports);
        return d;
      },
      "Describes the UCX (libucp) loaded at run time: a dict with available, library (the path "
      "loaded), version, transports (the 'tl/device' resources a context sees under the current "
      "UCX_* environment, e.g. 'tcp/lo', 'rc_mlx5/mlx5_0:1'), reason (why not, empty when "
      "available) and auto_between_hosts (whether llmdd.Transport=auto links other hosts over "
      "it: only with an RDMA device and an RDMA transport). Never raises; looked up once per "
      "process (LLMDD_UCX_LIBRARY overrides libucp.so.0).");
}

}  // namespace llm_datadist::bindings
