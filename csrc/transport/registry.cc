// SPDX-License-Identifier: Apache-2.0
// The one list of transports, in preference order (see transport.h).
//
// Adding a transport touches csrc/transport/ and nothing outside it:
//   - its files: <name>.cc (and a <name>/ folder if it needs more), defining
//     `const TransportProvider &<Name>Provider()`: Decide and Build, and as it needs them Offer,
//     the process hooks Start / ForgetRegions, and can_be_forced (llmdd.Transport may then name
//     it; rank it before tcp);
//   - its TransportKind in transport.h and its name in TransportName below;
//   - the registration line: <Name> in LLMDD_TRANSPORTS below, where it ranks.
// Nothing else names it: the engine runs every provider's Start at init and ForgetRegions at
// finalize, the handshake asks every provider in this order, llmdd.Transport accepts every name
// that can be forced, and the engine reaches memory through Link::TransportFor. CMake
// (GLOB_RECURSE) and fuzz/build.sh pick up csrc/transport/*.cc and csrc/transport/*/*.cc.
#include "transport/transport.h"

#include <algorithm>

#include "common/logging.h"

namespace llm_datadist {

namespace {

// The owner-streamed transport that serves every link: it stays when another one is forced.
constexpr TransportKind kStreamedFallback = TransportKind::kTcp;

}  // namespace

// shm first: on one host the mapped pools are the cheapest path. cuda_ipc and CMA reach what
// shm does not (the CUDA pool, registered host memory) on the same authenticated pool channel.
// tcp last: it serves every link, streamed by the owner.
// ucx between hosts (or forced): one-sided gets of the peer's pools, before owner-streamed tcp.
// The kinds llmdd.Transport may force are those whose provider says can_be_forced (tcp, ucx).
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
  std::string forced_why;  // why the forced transport does not serve, when it does not
  for (const TransportProvider *provider : TransportProviders()) {
    const TransportKind kind = provider->kind();
    const bool is_forced = peer.forced == kind;
    // Forced: that one and the streamed fallback only (the same-host transports stay out).
    if (peer.forced && !is_forced && kind != kStreamedFallback) continue;
    ProviderDecision decision = provider->Decide(peer);
    if (!decision.serves) {
      if (is_forced) forced_why = std::move(decision.reason);
      continue;
    }
    std::unique_ptr<Transport> transport;
    DetailedStatus built = provider->Build(peer, &transport);
    if (!built.ok() || transport == nullptr) {
      LLMDD_LOG(kWarning, "link to cluster ", peer.peer_cluster_id, ": ", TransportName(kind),
                " serves it but could not start (", built.message(), "); left out");
      if (is_forced) forced_why = detail::Concat("it could not start (", built.message(), ")");
      continue;
    }
    if (first) {
      *reported = kind;
      *reason = peer.forced && !is_forced
                    ? detail::Concat(ForcedReason(*peer.forced), " but ", forced_why, "; ", TransportName(kind), " streams")
                    : std::move(decision.reason);
      first = false;
    }
    transports->push_back(std::move(transport));
  }
}

DetailedStatus ParseForcedTransport(const char *key, const std::string &value, std::optional<TransportKind> *forced) {
  if (value == "auto") {
    forced->reset();
    return DetailedStatus::Ok();
  }
  std::vector<std::string> names;
  for (const TransportProvider *provider : TransportProviders()) {
    if (!provider->can_be_forced()) continue;
    if (value == TransportName(provider->kind())) {
      *forced = provider->kind();
      return DetailedStatus::Ok();
    }
    names.push_back(TransportName(provider->kind()));
  }
  std::sort(names.begin(), names.end());
  std::string accepted = "\"auto\"";
  for (size_t i = 0; i < names.size(); ++i)
    accepted += detail::Concat(i + 1 == names.size() ? " or \"" : ", \"", names[i], "\"");
  return DetailedStatus(LLM_PARAM_INVALID, detail::Concat(key, " \"", value, "\" must be ", accepted));
}

std::string ForcedReason(TransportKind kind) {
  return detail::Concat(TransportName(kind), " forced (llmdd.Transport / LLMDD_TRANSPORT)");
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
