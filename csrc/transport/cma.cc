// SPDX-License-Identifier: Apache-2.0
// cma: the peer's registered (unpooled) host memory, read by address with process_vm_readv.
// The kernel checks that this process may read the peer (same uid, ptrace scope); a refusal or
// a partial read means "not readable this way" and the transfer is streamed instead.
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "common/logging.h"
#include "transport/transport.h"

namespace llm_datadist {

namespace {

class CmaTransport : public Transport {
 public:
  explicit CmaTransport(int peer_pid) : peer_pid_(peer_pid) {}
  TransportKind kind() const override { return TransportKind::kCma; }
  Capabilities caps() const override {
    Capabilities c;
    c.one_sided = true;
    c.registered_host = true;
    return c;
  }
  bool Reaches(const RemoteMemory &where, MemoryKind local_kind) override {
    return where.space == RemoteMemory::Space::kRawHost && IsHostAddressable(local_kind);
  }
  DetailedStatus Read(const std::vector<RemoteSpan> &spans, MemoryKind local_kind, Deadline deadline) override {
    size_t i = 0;
    while (i < spans.size()) {
      const size_t n = std::min<size_t>(IOV_MAX, spans.size() - i);
      std::vector<iovec> local(n), remote(n);
      uint64_t expected = 0;
      for (size_t k = 0; k < n; ++k) {
        const RemoteSpan &s = spans[i + k];
        local[k] = {s.local, s.bytes};
        remote[k] = {reinterpret_cast<void *>(static_cast<uintptr_t>(s.offset)), s.bytes};
        expected += s.bytes;
      }
      ssize_t got = process_vm_readv(peer_pid_, local.data(), n, remote.data(), n, 0);
      if (got < 0) {
        int err = errno;
        return DetailedStatus(err == ESRCH ? LLM_LINK_FAILED : LLM_FEATURE_NOT_ENABLED,
                              detail::Concat("process_vm_readv from pid ", peer_pid_, " failed: ", std::strerror(err)));
      }
      if (static_cast<uint64_t>(got) != expected) {
        // Partial read (a page boundary the peer unmapped): the rest is not readable this way.
        return DetailedStatus(LLM_FEATURE_NOT_ENABLED, "process_vm_readv read part of the request only");
      }
      i += n;
    }
    return DetailedStatus::Ok();
  }

 private:
  const int peer_pid_;
};

class CmaTransportProvider final : public TransportProvider {
 public:
  TransportKind kind() const override { return TransportKind::kCma; }
  ProviderDecision Decide(const PeerView &peer) const override {
    // A raw address is told only to a peer proven to be on this host (the pool channel).
    if (!peer.pools_shared || !peer.same_host) return {false, peer.pools_reason};
    if (peer.peer_pid <= 0) return {false, "the peer's pid is unknown"};
    return {true, "same host: registered host memory read with process_vm_readv"};
  }
  DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const override {
    *out = std::make_unique<CmaTransport>(peer.peer_pid);
    return DetailedStatus::Ok();
  }
};

}  // namespace

const TransportProvider &CmaProvider() {
  static const CmaTransportProvider provider;
  return provider;
}

}  // namespace llm_datadist
