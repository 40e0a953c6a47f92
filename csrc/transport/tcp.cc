// SPDX-License-Identifier: Apache-2.0
// tcp: owner-streamed. The owner sends a pull's bytes (or receives a push's) itself, after its
// reply, on the link's connection (TCP, or the Unix pool channel on one host), staging CUDA
// memory through host memory. It reaches every kind of memory the owner holds and serves every
// link; one-sided transports take what they reach and this carries the rest. The streamed
// protocol is the engine's (engine/transfer.cc, Delivery::kStream): this transport only says
// that it is there.
#include "transport/transport.h"

namespace llm_datadist {

namespace {

class TcpTransport : public Transport {
 public:
  TransportKind kind() const override { return TransportKind::kTcp; }
  Capabilities caps() const override {
    Capabilities c;
    c.one_sided = false;
    c.host_pool = true;
    c.cuda_pool = true;
    c.registered_host = true;
    return c;
  }
};

class TcpTransportProvider final : public TransportProvider {
 public:
  TransportKind kind() const override { return TransportKind::kTcp; }
  // llmdd.Transport=tcp: tcp alone, even on one host (tests of the streamed path).
  bool can_be_forced() const override { return true; }
  // Always serves. Reported only when no preferred transport serves the link, so its reason is
  // why the pools are not shared (tcp forced, another host, the pool channel failed).
  ProviderDecision Decide(const PeerView &peer) const override { return {true, peer.pools_reason}; }
  DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const override {
    *out = std::make_unique<TcpTransport>();
    return DetailedStatus::Ok();
  }
};

}  // namespace

const TransportProvider &TcpProvider() {
  static const TcpTransportProvider provider;
  return provider;
}

}  // namespace llm_datadist
