// SPDX-License-Identifier: Apache-2.0
// ucx_offer_fuzz: a peer's ucx handshake offer (csrc/transport/ucx/ucx_offer.h), decoded before
// any of it reaches UCX. Input: the offer bytes. An offer that decodes must survive a round
// trip unchanged and respect every bound the decoder promises.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "transport/ucx/ucx_offer.h"

using namespace llm_datadist;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const std::vector<uint8_t> bytes(data, data + size);
  ucx::UcxOffer offer;
  if (!ucx::DecodeOffer(bytes, &offer).ok()) return 0;
  if (offer.worker_address.empty() || offer.worker_address.size() > ucx::kMaxWorkerAddressBytes ||
      offer.regions.size() > ucx::kMaxOfferedRegions) {
    std::abort();
  }
  for (const ucx::OfferedRegion &r : offer.regions) {
    if (r.size == 0 || r.base > UINT64_MAX - r.size || r.packed_rkey.empty() ||
        r.packed_rkey.size() > ucx::kMaxPackedRkeyBytes) {
      std::abort();
    }
  }
  if (ucx::EncodeOffer(offer) != bytes) std::abort();  // the encoding is canonical
  return 0;
}
