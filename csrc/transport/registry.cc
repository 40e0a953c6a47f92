// SPDX-License-Identifier: Apache-2.0
// The one list of transports, in preference order (see transport.h).
//
// Adding a transport: a file under csrc/transport/ defines `const TransportProvider
// &<Name>Provider()` (and its TransportKind in transport.h), and <Name> goes into this list
// where it ranks. Nothing else names it: the handshake asks every provider in this order.
#include "transport/transport.h"

#include "common/logging.h"

namespace llm_datadist {

// shm first: on one host the mapped pools are the cheapest path. cuda_ipc and CMA reach what
// shm does not (the CUDA pool, registered host memory) on the same authenticated pool channel.
// tcp last: it serves every link, streamed by the owner.
// ucx between hosts (or forced): one-sided gets of the peer's pools, before owner-streamed tcp.
#define LLMDD_TRANSPORTS(X) X(Shm) X(CudaIpc) X(Cma) X(Ucx) X(Tcp)

#define LLMDD_DECLARE_PROVIDER(name) const TransportProvider &name##Provider();
LLMDD_TRANSPORTS(LLMDD_DECLARE_PROVIDER)
#undef LLMDD_DECLARE_PROVIDER

const std::vector<const TransportProvider *> &TransportProviders() {
#define LLMDD_LIST_PROVIDER(name) &name##Provider(),
  static const std::vector<const TransportProvider *> providers = {LLMDD_TRANSPORTS(LLMDD_LIST_PROVIDER)};
#undef LLMDD_LIST_PROVIDER
  return providers;
}

void SelectTransports(const PeerView &peer, std::vector<std::unique_ptr<Transport>> *transports,
                      TransportKind *reported, std::string *reason) {
  transports->clear();
  bool first = true;
  for (const TransportProvider *provider : TransportProviders()) {
    ProviderDecision decision = provider->Decide(peer);
    if (!decision.serves) continue;
    std::unique_ptr<Transport> transport;
    DetailedStatus built = provider->Build(peer, &transport);
    if (!built.ok() || transport == nullptr) {
      LLMDD_LOG(kWarning, "link to cluster ", peer.peer_cluster_id, ": ", TransportName(provider->kind()),
                " serves it but could not start (", built.message(), "); left out");
      continue;
    }
    if (first) {
      *reported = provider->kind();
      *reason = std::move(decision.reason);
      first = false;
    }
    transports->push_back(std::move(transport));
  }
}

const char *TransportName(TransportKind kind) {
  switch (kind) {
    case TransportKind::kTcp: return "tcp";
    case TransportKind::kShm: return "shm";
    case TransportKind::kCma: return "cma";
    case TransportKind::kCudaIpc: return "cuda_ipc";
    case TransportKind::kUcx: return "ucx";
  }
  return "unknown";
}

}  // namespace llm_datadist
