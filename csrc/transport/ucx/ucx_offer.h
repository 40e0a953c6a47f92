// SPDX-License-Identifier: Apache-2.0
// What a process offers its peers for the ucx transport in the link handshake: its UCX worker
// address and, per shared region (pools), where the region lives in its address space, how big
// it is and the packed remote key that reaches it. Bounded: a peer's offer is decoded with
// every length checked before anything reaches UCX's parsers.
//
// Layout (little-endian, as every frame of the link protocol):
//   u8  version (kUcxOfferVersion)
//   u32 worker address bytes, then the bytes          (1..kMaxWorkerAddressBytes)
//   u8  region count                                  (0..kMaxOfferedRegions)
//   per region: u8 id, u8 kind, u8 memory (0 host, 1 cuda), u64 base, u64 size,
//               u32 packed rkey bytes, then the bytes (1..kMaxPackedRkeyBytes)
#ifndef LLM_DATADIST_TRANSPORT_UCX_UCX_OFFER_H_
#define LLM_DATADIST_TRANSPORT_UCX_UCX_OFFER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "llm_datadist/status.h"
#include "transport/ucx/ucx_worker.h"

namespace llm_datadist::ucx {

constexpr uint8_t kUcxOfferVersion = 1;
constexpr size_t kMaxOfferedRegions = 8;

struct OfferedRegion {
  uint8_t id = 0;    // a RegionId
  uint8_t kind = 0;  // a RegionKind
  MemoryKind memory = MemoryKind::kHost;
  uint64_t base = 0;  // the region's address in the offering process
  uint64_t size = 0;
  std::string packed_rkey;
};

struct UcxOffer {
  std::string worker_address;
  std::vector<OfferedRegion> regions;
};

// Sent by an owner over UCX (an active message, kCacheKeysMessageId) to each linked peer when a
// cache of its is registered after the link (or at link time for those registered before), and
// when it is unregistered: the cache's tensors, where they live and their packed remote keys.
// The peer reads them only where the owner later describes them in a pull reply.
//   u8 version, u8 op (1 add, 2 remove), u64 sender cluster, u64 receiver cluster, i64 cache id,
//   u32 range count (0..kMaxCacheRanges; 0 for remove), per range: u64 address, u64 bytes,
//   u32 packed rkey bytes (1..kMaxPackedRkeyBytes), then the bytes
constexpr unsigned kCacheKeysMessageId = 0x4c44;  // "LD"
constexpr size_t kMaxCacheRanges = 4096;
struct CacheKeysMessage {
  enum class Op : uint8_t { kAdd = 1, kRemove = 2 };
  Op op = Op::kAdd;
  uint64_t sender_cluster = 0;
  uint64_t receiver_cluster = 0;
  int64_t cache_id = -1;
  struct Range {
    uint64_t address;
    uint64_t bytes;
    std::string packed_rkey;
  };
  std::vector<Range> ranges;
};
std::vector<uint8_t> EncodeCacheKeys(const CacheKeysMessage &message);
// LLM_LINK_FAILED naming what is wrong (as DecodeOffer).
DetailedStatus DecodeCacheKeys(const uint8_t *data, size_t bytes, CacheKeysMessage *out);

std::vector<uint8_t> EncodeOffer(const UcxOffer &offer);
// LLM_LINK_FAILED naming what is wrong for a malformed, truncated, over-long or oversized offer
// (a region whose base + size wraps, duplicate region ids, lengths past the bounds above).
DetailedStatus DecodeOffer(const std::vector<uint8_t> &bytes, UcxOffer *out);

}  // namespace llm_datadist::ucx

#endif  // LLM_DATADIST_TRANSPORT_UCX_UCX_OFFER_H_
