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

std::vector<uint8_t> EncodeOffer(const UcxOffer &offer);
// LLM_LINK_FAILED naming what is wrong for a malformed, truncated, over-long or oversized offer
// (a region whose base + size wraps, duplicate region ids, lengths past the bounds above).
DetailedStatus DecodeOffer(const std::vector<uint8_t> &bytes, UcxOffer *out);

}  // namespace llm_datadist::ucx

#endif  // LLM_DATADIST_TRANSPORT_UCX_UCX_OFFER_H_
