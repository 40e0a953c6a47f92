// SPDX-License-Identifier: Apache-2.0
// The process's UCX worker for the ucx transport (csrc/transport/ucx.cc), started by the first
// engine that wants UCX and shared by every engine and link of the process afterwards:
//   llmdd.Transport=ucx   forced: started over whatever UCX_TLS allows (tests: tcp on lo); an
//                         engine fails to initialize when UCX cannot start;
//   auto (the default)    started only where the host has an RDMA device and UCX an RDMA
//                         transport for it (rc, dc, ud, srd...), and
//                         then without UCX's tcp transport unless UCX_TLS names its own choice:
//                         UCX's tcp emulates gets and puts in the owner's worker, slower than our
//                         own tcp, and it neither authenticates peers nor checks their remote
//                         keys, so it is not opened on a host's network unasked.
// Pools are mapped (ucp_mem_map) once, when first offered, and unmapped when their engine
// finalizes (ForgetUcxRegions) before the memory goes.
// The engine reaches both through the ucx provider's hooks (TransportProvider::Start and
// ForgetRegions, transport.h); it does not name UCX.
#ifndef LLM_DATADIST_TRANSPORT_UCX_UCX_PROCESS_H_
#define LLM_DATADIST_TRANSPORT_UCX_UCX_PROCESS_H_

#include <string>
#include <vector>

#include "llm_datadist/status.h"
#include "transport/transport.h"
#include "transport/ucx/ucp_api.h"

namespace llm_datadist::ucx {

// Starts the process's worker if the mode wants it (see above); Ok with nothing started is the
// usual auto answer on a host without RDMA. Forced and UCX unusable: LLM_FEATURE_NOT_ENABLED
// naming why.
DetailedStatus EnableUcx(bool forced);

// Unmaps the regions (by base address) an engine is about to free.
void ForgetUcxRegions(const std::vector<LocalRegion> &regions);

// Whether this host has an RDMA device (an entry in /sys/class/infiniband).
bool HasRdmaDevice();

// Whether the transports Probe() lists include an RDMA one.
bool HasRdmaTransport(const std::vector<std::string> &transports);

}  // namespace llm_datadist::ucx

#endif  // LLM_DATADIST_TRANSPORT_UCX_UCX_PROCESS_H_
