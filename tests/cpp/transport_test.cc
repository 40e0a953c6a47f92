// SPDX-License-Identifier: Apache-2.0
// The transport seam (csrc/transport/): which providers serve a link for a given view of the
// peer, what link_info would report, and the one-sided reads of shm (a mapping) and CMA
// (process_vm_readv, here of this very process) moving real bytes; which names llmdd.Transport
// may force, and that a forced one serves beside tcp alone.
#include <unistd.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "engine/data_dist_engine.h"
#include "test_harness.h"
#include "transport/transport.h"

using namespace llm_datadist;

namespace {

std::vector<TransportKind> Kinds(const std::vector<std::unique_ptr<Transport>> &transports) {
  std::vector<TransportKind> kinds;
  for (const auto &t : transports) kinds.push_back(t->kind());
  return kinds;
}

}  // namespace

LLMDD_TEST(Transport, RegistryOrderAndNames) {
  const auto &providers = TransportProviders();
  ASSERT_TRUE(providers.size() == 5);
  EXPECT_TRUE(providers[0]->kind() == TransportKind::kShm);
  EXPECT_TRUE(providers[1]->kind() == TransportKind::kCudaIpc);
  EXPECT_TRUE(providers[2]->kind() == TransportKind::kCma);
  EXPECT_TRUE(providers[3]->kind() == TransportKind::kUcx);
  EXPECT_TRUE(providers.back()->kind() == TransportKind::kTcp);
  EXPECT_EQ(std::string(TransportName(TransportKind::kUcx)), std::string("ucx"));
  EXPECT_EQ(std::string(TransportName(TransportKind::kShm)), std::string("shm"));
  EXPECT_EQ(std::string(TransportName(TransportKind::kTcp)), std::string("tcp"));
  EXPECT_EQ(std::string(TransportName(TransportKind::kCudaIpc)), std::string("cuda_ipc"));
  // None of the built-in transports puts anything into the handshake (the wire stays protocol 4's);
  // ucx offers only once an engine started UCX and has a region to offer.
  for (const TransportProvider *p : providers) EXPECT_TRUE(p->Offer({}).empty());
}

LLMDD_TEST(Transport, UnsharedPoolsGiveTcpOnlyWithTheHandshakesReason) {
  std::vector<RemoteRegion> regions(1);
  PeerView view;
  view.same_host = false;
  view.peer_pid = 1234;
  view.pools_shared = false;
  view.pools_reason = "peer is on another host";
  view.regions = &regions;
  std::vector<std::unique_ptr<Transport>> transports;
  TransportKind reported = TransportKind::kShm;
  std::string reason;
  SelectTransports(view, &transports, &reported, &reason);
  EXPECT_TRUE(Kinds(transports) == std::vector<TransportKind>{TransportKind::kTcp});
  EXPECT_TRUE(reported == TransportKind::kTcp);
  EXPECT_EQ(reason, std::string("peer is on another host"));
  EXPECT_FALSE(transports[0]->caps().one_sided);
  // Owner-streamed: no one-sided read.
  std::vector<uint8_t> dst(8);
  EXPECT_EQ(transports[0]->Read({{RemoteMemory::Region(0), 0, dst.data(), 8}}, MemoryKind::kHost, DeadlineIn(1000)).code(),
            LLM_FEATURE_NOT_ENABLED);
}

// A peer on this host whose pools the handshake shared: its host pool is `pool`, a buffer of this
// process standing in for its read-only mapping, and it offers its CUDA pool over IPC.
struct SameHostPeer {
  std::vector<uint8_t> pool = std::vector<uint8_t>(4096);
  std::vector<RemoteRegion> regions = std::vector<RemoteRegion>(2);
  PeerView view;
  SameHostPeer() {
    for (size_t i = 0; i < pool.size(); ++i) pool[i] = static_cast<uint8_t>(i * 7 + 1);
    regions[0].id = static_cast<uint8_t>(RegionId::kHostPool);
    regions[0].kind = RegionKind::kHostPool;
    regions[0].size = pool.size();
    regions[0].mapped = pool.data();
    regions[1].id = static_cast<uint8_t>(RegionId::kDevicePool);
    regions[1].kind = RegionKind::kCudaPool;
    regions[1].size = 1 << 20;
    regions[1].has_ipc = true;
    view.same_host = true;
    view.peer_pid = getpid();
    view.pools_shared = true;
    view.pools_reason = "same host: pools shared through memfd";
    view.regions = &regions;
  }
  SameHostPeer(const SameHostPeer &) = delete;
};

LLMDD_TEST(Transport, SharedPoolsReadThroughShmAndCma) {
  SameHostPeer peer;
  std::vector<uint8_t> &pool = peer.pool;
  PeerView &view = peer.view;
  std::vector<std::unique_ptr<Transport>> transports;
  TransportKind reported = TransportKind::kTcp;
  std::string reason;
  SelectTransports(view, &transports, &reported, &reason);
  EXPECT_TRUE(Kinds(transports) == (std::vector<TransportKind>{TransportKind::kShm, TransportKind::kCudaIpc,
                                                                TransportKind::kCma, TransportKind::kTcp}));
  EXPECT_TRUE(reported == TransportKind::kShm);
  EXPECT_EQ(reason, std::string("same host: pools shared through memfd"));
  Transport &shm = *transports[0];
  Transport &cuda_ipc = *transports[1];
  Transport &cma = *transports[2];

  // shm reaches the mapped pool (into host or device memory), not the CUDA pool or raw addresses.
  EXPECT_TRUE(shm.Reaches(RemoteMemory::Region(0), MemoryKind::kHost));
  EXPECT_FALSE(shm.Reaches(RemoteMemory::Region(1), MemoryKind::kHost));
  EXPECT_FALSE(shm.Reaches(RemoteMemory::RawHost(), MemoryKind::kHost));
  std::vector<uint8_t> dst(96, 0);
  ASSERT_OK(shm.Read({{RemoteMemory::Region(0), 100, dst.data(), 32}, {RemoteMemory::Region(0), 4000, dst.data() + 32, 64}},
                     MemoryKind::kHost, DeadlineIn(1000)));
  EXPECT_EQ(std::memcmp(dst.data(), pool.data() + 100, 32), 0);
  EXPECT_EQ(std::memcmp(dst.data() + 32, pool.data() + 4000, 64), 0);
  // Past the region's end: refused, nothing read out of bounds.
  EXPECT_FALSE(shm.Read({{RemoteMemory::Region(0), 4090, dst.data(), 32}}, MemoryKind::kHost, DeadlineIn(1000)).ok());

  // Without a CUDA driver the IPC pool is not reachable, and nothing was opened.
  if (cuda::Driver() == nullptr) {
    EXPECT_FALSE(cuda_ipc.Reaches(RemoteMemory::Region(1), MemoryKind::kHost));
    EXPECT_FALSE(cuda_ipc.opened());
  }
  EXPECT_FALSE(cuda_ipc.Reaches(RemoteMemory::Region(0), MemoryKind::kHost));

  // CMA reads raw host addresses of the peer (this process) into host memory only.
  EXPECT_TRUE(cma.Reaches(RemoteMemory::RawHost(), MemoryKind::kHost));
  EXPECT_FALSE(cma.Reaches(RemoteMemory::RawHost(), MemoryKind::kCudaDevice));
  EXPECT_FALSE(cma.Reaches(RemoteMemory::Region(0), MemoryKind::kHost));
  std::vector<uint8_t> source(256);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(255 - i);
  std::vector<uint8_t> copy(256, 0);
  ASSERT_OK(cma.Read({{RemoteMemory::RawHost(), reinterpret_cast<uintptr_t>(source.data()), copy.data(), 128},
                      {RemoteMemory::RawHost(), reinterpret_cast<uintptr_t>(source.data()) + 128, copy.data() + 128, 128}},
                     MemoryKind::kHost, DeadlineIn(1000)));
  EXPECT_TRUE(copy == source);
  // An address that is not mapped in the peer: not readable this way (the engine streams it).
  EXPECT_EQ(cma.Read({{RemoteMemory::RawHost(), 8, copy.data(), 8}}, MemoryKind::kHost, DeadlineIn(1000)).code(),
            LLM_FEATURE_NOT_ENABLED);
}

LLMDD_TEST(Transport, SameHostWithoutPoolChannelStaysTcp) {
  // One host, but the pool channel failed (or tcp was forced): no one-sided transport may be
  // used, not even CMA, since nothing proved the peer may read our memory.
  std::vector<RemoteRegion> regions(1);
  regions[0].has_ipc = true;
  PeerView view;
  view.same_host = true;
  view.peer_pid = getpid();
  view.pools_shared = false;
  view.pools_reason = "tcp forced (llmdd.Transport / LLMDD_TRANSPORT)";
  view.regions = &regions;
  std::vector<std::unique_ptr<Transport>> transports;
  TransportKind reported = TransportKind::kShm;
  std::string reason;
  SelectTransports(view, &transports, &reported, &reason);
  EXPECT_TRUE(Kinds(transports) == std::vector<TransportKind>{TransportKind::kTcp});
  EXPECT_EQ(reason, view.pools_reason);
}

LLMDD_TEST(Transport, PeerOffersAreFoundByKind) {
  PeerView view;
  view.peer_offers = {{TransportKind::kUcx, {1, 2}}};
  EXPECT_TRUE(view.OfferOf(TransportKind::kUcx) == (std::vector<uint8_t>{1, 2}));
  EXPECT_TRUE(view.OfferOf(TransportKind::kShm).empty());
}

// llmdd.Transport: "auto" or any registered name whose provider can be forced; the message for
// anything else lists exactly those names, from the registry.
LLMDD_TEST(Transport, ForcedNamesComeFromTheRegistry) {
  std::optional<TransportKind> forced = TransportKind::kShm;
  ASSERT_OK(ParseForcedTransport("llmdd.Transport", "auto", &forced));
  EXPECT_FALSE(forced.has_value());
  std::vector<std::string> forceable;
  for (const TransportProvider *p : TransportProviders()) {
    const std::string name = TransportName(p->kind());
    forced.reset();
    DetailedStatus parsed = ParseForcedTransport("llmdd.Transport", name, &forced);
    if (p->can_be_forced()) {
      forceable.push_back(name);
      ASSERT_OK(parsed);
      EXPECT_TRUE(forced == p->kind());
    } else {
      EXPECT_EQ(parsed.code(), LLM_PARAM_INVALID);
      EXPECT_FALSE(forced.has_value());
    }
  }
  // Today's forceable ones (the option's documented values).
  EXPECT_TRUE(forceable == (std::vector<std::string>{"ucx", "tcp"}));
  for (const char *bad : {"rdma", "shm", "cma", "cuda_ipc", "TCP", "", "tcp "}) {
    DetailedStatus parsed = ParseForcedTransport("llmdd.Transport", bad, &forced);
    EXPECT_EQ(parsed.code(), LLM_PARAM_INVALID);
    EXPECT_EQ(parsed.message(),
              std::string("llmdd.Transport \"") + bad + "\" must be \"auto\", \"tcp\" or \"ucx\"");
  }
}

// The engine parses the option (or LLMDD_TRANSPORT) through the registry.
LLMDD_TEST(Transport, EngineOptionsCarryTheForcedKind) {
  for (const TransportProvider *p : TransportProviders()) {
    EngineOptions parsed;
    DetailedStatus got = ParseEngineOptions(
        {{OPTION_DEVICE_BACKEND, "cpu"}, {"llmdd.Transport", TransportName(p->kind())}}, &parsed);
    EXPECT_EQ(got.ok(), p->can_be_forced());
    if (got.ok()) EXPECT_TRUE(parsed.forced_transport == p->kind());
  }
  EngineOptions parsed;
  ASSERT_OK(ParseEngineOptions({{OPTION_DEVICE_BACKEND, "cpu"}, {"llmdd.Transport", "auto"}}, &parsed));
  EXPECT_FALSE(parsed.forced_transport.has_value());
  DetailedStatus bad = ParseEngineOptions({{OPTION_DEVICE_BACKEND, "cpu"}, {"llmdd.Transport", "udp"}}, &parsed);
  EXPECT_EQ(bad.code(), LLM_PARAM_INVALID);
  EXPECT_EQ(bad.message(), std::string("llmdd.Transport \"udp\" must be \"auto\", \"tcp\" or \"ucx\""));
}

// Forcing a transport leaves out every other one but tcp, even where they would serve (one
// host, pools shared, the CUDA pool offered over IPC); the reason says what was forced.
LLMDD_TEST(Transport, ForcedKindServesAloneBesideTcp) {
  SameHostPeer peer;
  PeerView &view = peer.view;
  int forced_kinds = 0;
  for (const TransportProvider *p : TransportProviders()) {
    if (!p->can_be_forced()) continue;
    ++forced_kinds;
    const TransportKind kind = p->kind();
    view.forced = kind;
    view.pools_reason = ForcedReason(kind);
    std::vector<std::unique_ptr<Transport>> transports;
    TransportKind reported = TransportKind::kShm;
    std::string reason;
    SelectTransports(view, &transports, &reported, &reason);
    const std::vector<TransportKind> kinds = Kinds(transports);
    EXPECT_TRUE(kinds == std::vector<TransportKind>{TransportKind::kTcp} ||
                kinds == (std::vector<TransportKind>{kind, TransportKind::kTcp}));
    if (kind == TransportKind::kTcp) {
      EXPECT_TRUE(reported == TransportKind::kTcp);
      EXPECT_EQ(reason, std::string("tcp forced (llmdd.Transport / LLMDD_TRANSPORT)"));
    } else if (kinds.size() == 1) {
      // Here (no peer offer) the forced one does not serve: tcp streams, and says why not.
      EXPECT_TRUE(reported == TransportKind::kTcp);
      EXPECT_EQ(reason, ForcedReason(kind) + " but " + p->Decide(view).reason + "; tcp streams");
    } else {
      EXPECT_TRUE(reported == kind);
    }
  }
  EXPECT_EQ(forced_kinds, 2);
  EXPECT_EQ(ForcedReason(TransportKind::kUcx), std::string("ucx forced (llmdd.Transport / LLMDD_TRANSPORT)"));
  // Not forced, the same view gets the same-host transports.
  view.forced.reset();
  view.pools_reason = "same host: pools shared through memfd";
  std::vector<std::unique_ptr<Transport>> transports;
  TransportKind reported = TransportKind::kTcp;
  std::string reason;
  SelectTransports(view, &transports, &reported, &reason);
  EXPECT_TRUE(reported == TransportKind::kShm);
}
