// SPDX-License-Identifier: Apache-2.0
#include "transport/ucx/ucx_offer.h"

#include <set>

#include "link/wire.h"

namespace llm_datadist::ucx {

std::vector<uint8_t> EncodeOffer(const UcxOffer &offer) {
  ByteWriter w;
  w.Put<uint8_t>(kUcxOfferVersion);
  w.PutString(offer.worker_address);
  w.Put<uint8_t>(static_cast<uint8_t>(offer.regions.size()));
  for (const OfferedRegion &r : offer.regions) {
    w.Put<uint8_t>(r.id).Put<uint8_t>(r.kind).Put<uint8_t>(static_cast<uint8_t>(r.memory));
    w.Put<uint64_t>(r.base).Put<uint64_t>(r.size);
    w.PutString(r.packed_rkey);
  }
  return w.bytes();
}

DetailedStatus DecodeOffer(const std::vector<uint8_t> &bytes, UcxOffer *out) {
  ByteReader r(bytes);
  uint8_t version = 0;
  LLMDD_CHECK(r.Get(&version), LLM_LINK_FAILED, "UCX offer: empty");
  LLMDD_CHECK(version == kUcxOfferVersion, LLM_LINK_FAILED, "UCX offer: version ", int{version},
              " (this build speaks ", int{kUcxOfferVersion}, ")");
  UcxOffer offer;
  LLMDD_CHECK(r.GetString(&offer.worker_address, kMaxWorkerAddressBytes) &&
                  !offer.worker_address.empty(),
              LLM_LINK_FAILED, "UCX offer: worker address missing or over ", kMaxWorkerAddressBytes,
              " bytes");
  uint8_t count = 0;
  LLMDD_CHECK(r.Get(&count) && count <= kMaxOfferedRegions, LLM_LINK_FAILED,
              "UCX offer: region count missing or over ", kMaxOfferedRegions);
  std::set<uint8_t> ids;
  for (uint8_t i = 0; i < count; ++i) {
    OfferedRegion region;
    uint8_t memory = 0;
    const bool read = r.Get(&region.id) && r.Get(&region.kind) && r.Get(&memory) &&
                      r.Get(&region.base) && r.Get(&region.size) &&
                      r.GetString(&region.packed_rkey, kMaxPackedRkeyBytes);
    LLMDD_CHECK(read && !region.packed_rkey.empty(), LLM_LINK_FAILED, "UCX offer: region ", int{i},
                " truncated, or its remote key empty or over ", kMaxPackedRkeyBytes, " bytes");
    LLMDD_CHECK(memory <= 1, LLM_LINK_FAILED, "UCX offer: region ", int{region.id},
                " has memory kind ", int{memory});
    region.memory = memory == 1 ? MemoryKind::kCuda : MemoryKind::kHost;
    LLMDD_CHECK(region.size > 0 && region.base <= UINT64_MAX - region.size, LLM_LINK_FAILED,
                "UCX offer: region ", int{region.id}, " of ", region.size, " bytes at ",
                region.base, " is empty or wraps");
    LLMDD_CHECK(ids.insert(region.id).second, LLM_LINK_FAILED, "UCX offer: region ",
                int{region.id}, " offered twice");
    offer.regions.push_back(std::move(region));
  }
  uint8_t extra = 0;
  LLMDD_CHECK(!r.Get(&extra), LLM_LINK_FAILED, "UCX offer: trailing bytes");
  *out = std::move(offer);
  return DetailedStatus::Ok();
}

std::vector<uint8_t> EncodeCacheKeys(const CacheKeysMessage &m) {
  ByteWriter w;
  w.Put<uint8_t>(kUcxOfferVersion).Put<uint8_t>(static_cast<uint8_t>(m.op));
  w.Put<uint64_t>(m.sender_cluster).Put<uint64_t>(m.receiver_cluster).Put<int64_t>(m.cache_id);
  w.Put<uint32_t>(static_cast<uint32_t>(m.ranges.size()));
  for (const CacheKeysMessage::Range &r : m.ranges) {
    w.Put<uint64_t>(r.address).Put<uint64_t>(r.bytes).PutString(r.packed_rkey);
  }
  return w.bytes();
}

DetailedStatus DecodeCacheKeys(const uint8_t *data, size_t bytes, CacheKeysMessage *out) {
  ByteReader r(data, bytes);
  uint8_t version = 0, op = 0;
  uint32_t count = 0;
  CacheKeysMessage m;
  LLMDD_CHECK(r.Get(&version) && version == kUcxOfferVersion && r.Get(&op) &&
                  (op == 1 || op == 2) && r.Get(&m.sender_cluster) && r.Get(&m.receiver_cluster) &&
                  r.Get(&m.cache_id) && r.Get(&count) && count <= kMaxCacheRanges &&
                  (op == 1 || count == 0),
              LLM_LINK_FAILED, "UCX cache keys message: malformed header (", bytes, " bytes)");
  m.op = static_cast<CacheKeysMessage::Op>(op);
  for (uint32_t i = 0; i < count; ++i) {
    CacheKeysMessage::Range range;
    LLMDD_CHECK(r.Get(&range.address) && r.Get(&range.bytes) &&
                    r.GetString(&range.packed_rkey, kMaxPackedRkeyBytes) && !range.packed_rkey.empty() &&
                    range.bytes > 0 && range.address <= UINT64_MAX - range.bytes,
                LLM_LINK_FAILED, "UCX cache keys message: range ", i, " malformed");
    m.ranges.push_back(std::move(range));
  }
  uint8_t extra = 0;
  LLMDD_CHECK(!r.Get(&extra), LLM_LINK_FAILED, "UCX cache keys message: trailing bytes");
  *out = std::move(m);
  return DetailedStatus::Ok();
}

}  // namespace llm_datadist::ucx
