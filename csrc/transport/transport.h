// SPDX-License-Identifier: Apache-2.0
// The transport seam: how the bytes of a transfer reach the peer's memory once a link exists.
//
// A link is made by the handshake (link/link_manager.cc), which learns who the peer is (same
// host or not, its pid, the regions it shares, what each transport put in its offer) and then
// asks every registered TransportProvider (transport/registry.cc, in preference order) whether
// it serves this link. Every provider that does builds a Transport, and the link owns them all:
// one link may use several at once (shm for the host pools, cuda_ipc for the CUDA pool, CMA for
// registered host memory, tcp for whatever none of them reaches). The engine never names a
// kind: it asks the link which transport reaches a given remote location (Link::TransportFor),
// and falls back to the owner-streamed path (tcp) when none does.
//
// Two families:
//   one-sided      Read/Write move bytes between local memory and the peer's memory without
//                  the peer's CPU (shm, cuda_ipc, CMA; UCX's gets and puts). The owner still
//                  decides what a requester may touch: it describes the locations of a transfer
//                  only after checking the request (or publishes them in its cache table).
//   owner-streamed the owner sends (pull) or receives (push) the bytes itself after its
//                  reply, on the link's connection (tcp). Read/Write are not available; the
//                  engine runs the streamed protocol on the link.
#ifndef LLM_DATADIST_TRANSPORT_TRANSPORT_H_
#define LLM_DATADIST_TRANSPORT_TRANSPORT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/cache_table.h"
#include "common/cuda_driver.h"
#include "link/wire.h"
#include "llm_datadist/status.h"
#include "memory/memory_pool.h"

namespace llm_datadist {

// Every transport this build knows. kTcp and kShm are on the wire (the link acknowledgement's
// transport byte, protocol 2+): their values never change. The others never leave the process.
enum class TransportKind : uint8_t { kTcp = 0, kShm = 1, kCma = 2, kCudaIpc = 3, kUcx = 4 };
const char *TransportName(TransportKind kind);

// A memory region this process shares with linked peers. Ids are on the wire (handshake
// regions, pull replies, the published cache table): kHostPool holds host-pool caches,
// kDevicePool the device pool's (CPU-device or CUDA), kCacheTable the published table.
enum class RegionId : uint8_t { kHostPool = 0, kDevicePool = 1, kCacheTable = 2 };
// What a region is (on the wire in the handshake: values fixed).
// kCacheTable is the owner's published blocks-cache table (cache/cache_table.h).
enum class RegionKind : uint8_t { kHostPool = 0, kCpuDevicePool = 1, kCudaPool = 2, kCacheTable = 3 };
constexpr uint8_t kMaxRegionKind = static_cast<uint8_t>(RegionKind::kCacheTable);

struct LocalRegion {
  uint8_t id = 0;  // a RegionId
  RegionKind kind = RegionKind::kHostPool;
  uint64_t size = 0;
  int memfd = -1;  // host and CPU-device pools, the cache table
  const void *base = nullptr;  // this process's address of a pool (UCX maps it); null: not offered
  bool has_ipc = false;
  cuda::CUipcMemHandle ipc_handle{};  // CUDA pool
};

// The peer's region as seen from here, as its handshake announced it.
struct RemoteRegion {
  uint8_t id = 0;
  RegionKind kind = RegionKind::kHostPool;
  uint64_t size = 0;
  // Read-only mapping of the peer's memfd once the pool channel shared it (the link unmaps it).
  const uint8_t *mapped = nullptr;
  bool has_ipc = false;
  cuda::CUipcMemHandle ipc_handle{};
};

// Where in the peer a span is: inside one of its regions (offset from the region's start), or
// at a raw address of its host memory (registered caches: offset is the address).
struct RemoteMemory {
  enum class Space : uint8_t { kRegion = 0, kRawHost = 1 };
  Space space = Space::kRegion;
  uint8_t region_id = 0;  // kRegion only
  static RemoteMemory Region(uint8_t id) { return {Space::kRegion, id}; }
  static RemoteMemory RawHost() { return {Space::kRawHost, 0}; }
};

// One piece of a batched read or write: `bytes` between `local` and the peer's memory at
// `offset` in `where`. The caller has checked the range against the region's announced size.
struct RemoteSpan {
  RemoteMemory where;
  uint64_t offset = 0;
  void *local = nullptr;
  uint64_t bytes = 0;
};

struct Capabilities {
  bool one_sided = false;  // Read/Write work; false: owner-streamed over the link's connection
  bool writes = false;     // Write works (pushes may go one-sided)
  // Memory kinds of the peer it reaches.
  bool host_pool = false;         // the peer's host and CPU-device pools
  bool cuda_pool = false;         // the peer's CUDA pool
  bool registered_host = false;   // the peer's registered (unpooled) host memory, by address
  bool published_table = false;   // LookupPublished works (one-sided pull_blocks by key)
};

// Memory of a cache registered after links were made (register_cache). For transports that must
// map or announce memory before a peer can reach it (UCX: ucp_mem_map and a new remote key).
struct RegisteredMemory {
  int64_t cache_id = -1;
  MemoryKind kind = MemoryKind::kHost;
  struct Range {
    uintptr_t address;
    uint64_t bytes;
  };
  std::vector<Range> ranges;  // one per tensor
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual TransportKind kind() const = 0;
  const char *name() const { return TransportName(kind()); }
  virtual Capabilities caps() const = 0;
  // Whether Read can reach `where` into local memory of `local_kind` right now. May open what it
  // opens lazily (cuda_ipc's IPC handle); false also when that failed.
  virtual bool Reaches(const RemoteMemory &where, MemoryKind local_kind) { return false; }
  // Batched, bounded by `deadline`. Every span must be one this transport Reaches. Errors:
  // LLM_FEATURE_NOT_ENABLED when the memory turned out unreachable this way (the engine then
  // streams the transfer instead; spans may have been partly copied), LLM_TIMEOUT past the
  // deadline, LLM_LINK_FAILED when the peer is gone, a copy error otherwise.
  virtual DetailedStatus Read(const std::vector<RemoteSpan> &spans, MemoryKind local_kind, Deadline deadline) {
    return DetailedStatus(LLM_FEATURE_NOT_ENABLED, detail::Concat(name(), " does not read one-sided"));
  }
  virtual DetailedStatus Write(const std::vector<RemoteSpan> &spans, MemoryKind local_kind, Deadline deadline) {
    return DetailedStatus(LLM_FEATURE_NOT_ENABLED, detail::Concat(name(), " does not write one-sided"));
  }
  // The owner's published entry for `key` (caps().published_table), or nullopt.
  virtual std::optional<TableEntry> LookupPublished(const TableKey &key) { return std::nullopt; }
  // A cache of this process was registered (or is going away) after the link was made. May
  // send to the peer (bounded by `deadline`); ours need nothing (CMA reads any address).
  virtual DetailedStatus OnCacheRegistered(const RegisteredMemory &memory, Deadline deadline) {
    return DetailedStatus::Ok();
  }
  virtual void OnCacheUnregistered(int64_t cache_id) {}
  // True when it holds resources opened on first use (cuda_ipc: the peer's pool is open).
  virtual bool opened() const { return false; }
};

// What one transport provider put into its side's handshake offer (TransportProvider::Offer).
struct TransportOffer {
  TransportKind kind = TransportKind::kTcp;
  std::vector<uint8_t> bytes;
};

// What a provider sees of a link being made, after authentication and the pool channel.
struct PeerView {
  uint64_t local_cluster_id = 0;
  uint64_t peer_cluster_id = 0;
  bool accepted_by_listener = false;  // this end is the server of the handshake
  bool same_host = false;             // both ends have one boot id
  int peer_pid = -1;
  // The transport llmdd.Transport forced (ParseForcedTransport), if any: then only it and tcp
  // serve (SelectTransports), and the handshake opens no pool channel (pools_shared is false).
  std::optional<TransportKind> forced;
  int device_ordinal = 0;             // this process's device (for opening CUDA memory)
  // The pool channel authenticated the peer (a process on this host of an allowed uid, that
  // echoed our nonce) and both ends mapped the other's memfds. Only then may a peer be told
  // where memory lives.
  bool pools_shared = false;
  std::string pools_reason;  // why the pools are (or are not) shared, as the handshake found it
  const std::vector<RemoteRegion> *regions = nullptr;  // the peer's regions (never null)
  // What the peer's providers put in its handshake offer (kinds with nothing are absent).
  std::vector<TransportOffer> peer_offers;
  // The peer's offer for `kind`; empty when it offered nothing for it.
  const std::vector<uint8_t> &OfferOf(TransportKind kind) const {
    static const std::vector<uint8_t> kNone;
    for (const TransportOffer &o : peer_offers)
      if (o.kind == kind) return o.bytes;
    return kNone;
  }
};

struct ProviderDecision {
  bool serves = false;
  std::string reason;  // why (or why not): link_info's "reason" when this one is reported
};

// What an initializing engine tells every provider (TransportProvider::Start).
struct ProcessSetup {
  std::optional<TransportKind> forced;  // as PeerView::forced
};

class TransportProvider {
 public:
  virtual ~TransportProvider() = default;
  virtual TransportKind kind() const = 0;
  // Whether llmdd.Transport may name it. A forced transport serves beside tcp alone, without
  // the same-host pool channel: only one that needs no pool channel can be forced.
  virtual bool can_be_forced() const { return false; }
  // Process-level hooks, called by each engine on every provider in TransportProviders() order.
  // Start: the engine is initializing, before it makes links. What it starts is the process's,
  // shared by its engines, so a second call finds it started. An error fails that engine's
  // initialization with it (providers after it are not started).
  virtual DetailedStatus Start(const ProcessSetup &setup) const { return DetailedStatus::Ok(); }
  // The engine's links are closed and it is about to free these regions: drop whatever still
  // refers to them (UCX: their memory mappings).
  virtual void ForgetRegions(const std::vector<LocalRegion> &regions) const {}
  // Bytes for this side's handshake offer (UCX: its worker address and packed remote keys).
  // Empty: nothing to offer; the handshake then carries nothing for this kind.
  virtual std::vector<uint8_t> Offer(const std::vector<LocalRegion> &local_regions) const { return {}; }
  // Whether this transport serves the link, and why.
  virtual ProviderDecision Decide(const PeerView &peer) const = 0;
  // Builds the transport for a link it serves (called only after Decide said so).
  virtual DetailedStatus Build(const PeerView &peer, std::unique_ptr<Transport> *out) const = 0;
};

// The providers in preference order (transport/registry.cc). The link reports the first one
// that serves it (link_info's "transport" and "reason").
const std::vector<const TransportProvider *> &TransportProviders();

// Asks every provider, in order, whether it serves the link `peer` describes, and builds those
// that do (one that fails to build is left out, logged). `reported` / `reason`: the first that
// serves (tcp serves every link). With peer.forced, only the forced provider and tcp are asked;
// when the forced one does not serve, tcp is reported with ForcedReason and why not.
void SelectTransports(const PeerView &peer, std::vector<std::unique_ptr<Transport>> *transports,
                      TransportKind *reported, std::string *reason);

// The value of option `key` (llmdd.Transport / LLMDD_TRANSPORT): "auto" (nullopt) or the name of
// a provider that can_be_forced. Anything else: LLM_PARAM_INVALID naming the value and every
// accepted one ("auto", then those names sorted: `"auto", "tcp" or "ucx"`).
DetailedStatus ParseForcedTransport(const char *key, const std::string &value, std::optional<TransportKind> *forced);

// Why the pools are not shared when `kind` was forced ("tcp forced (llmdd.Transport /
// LLMDD_TRANSPORT)"): the handshake's pools_reason, and tcp's reason when it is reported.
std::string ForcedReason(TransportKind kind);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_TRANSPORT_TRANSPORT_H_
