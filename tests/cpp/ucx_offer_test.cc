// SPDX-License-Identifier: Apache-2.0
// The ucx transport's handshake offer (csrc/transport/ucx/ucx_offer.h): round trip, and every
// malformed form a peer could send rejected with LLM_LINK_FAILED before UCX sees any of it.
#include <string>
#include <vector>

#include "test_harness.h"
#include "transport/ucx/ucx_offer.h"

namespace llm_datadist::ucx {
namespace {

UcxOffer Sample() {
  UcxOffer offer;
  // ("\x00" "address": a hex escape would swallow the 'add' that follows it)
  offer.worker_address = std::string("\x01\x02worker\x00" "address", 16);
  OfferedRegion host;
  host.id = 0;
  host.kind = 0;
  host.base = 0x7f0000000000ULL;
  host.size = 64 << 20;
  host.packed_rkey = std::string("rkey-host\x00\xff", 11);
  OfferedRegion cuda;
  cuda.id = 1;
  cuda.kind = 2;
  cuda.memory = MemoryKind::kCuda;
  cuda.base = 0x7e0000000000ULL;
  cuda.size = 1ULL << 33;
  cuda.packed_rkey = "rkey-cuda";
  offer.regions = {host, cuda};
  return offer;
}

bool Rejected(const std::vector<uint8_t> &bytes) {
  UcxOffer out;
  return DecodeOffer(bytes, &out).code() == LLM_LINK_FAILED;
}

LLMDD_TEST(UcxOffer, RoundTrip) {
  const UcxOffer in = Sample();
  UcxOffer out;
  ASSERT_OK(DecodeOffer(EncodeOffer(in), &out));
  EXPECT_EQ(out.worker_address, in.worker_address);
  ASSERT_TRUE(out.regions.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(int{out.regions[i].id}, int{in.regions[i].id});
    EXPECT_EQ(int{out.regions[i].kind}, int{in.regions[i].kind});
    EXPECT_TRUE(out.regions[i].memory == in.regions[i].memory);
    EXPECT_EQ(out.regions[i].base, in.regions[i].base);
    EXPECT_EQ(out.regions[i].size, in.regions[i].size);
    EXPECT_EQ(out.regions[i].packed_rkey, in.regions[i].packed_rkey);
  }
  UcxOffer empty_regions;
  empty_regions.worker_address = "a";
  ASSERT_OK(DecodeOffer(EncodeOffer(empty_regions), &out));
  EXPECT_TRUE(out.regions.empty());
}

LLMDD_TEST(UcxOffer, EveryTruncationIsRejected) {
  const std::vector<uint8_t> bytes = EncodeOffer(Sample());
  for (size_t n = 0; n < bytes.size(); ++n) {
    if (!Rejected(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n))) {
      LLMDD_FAIL_AT("a prefix of " << n << " bytes was accepted");
    }
  }
  std::vector<uint8_t> trailing = bytes;
  trailing.push_back(0);
  EXPECT_TRUE(Rejected(trailing));
}

LLMDD_TEST(UcxOffer, MalformedFieldsAreRejected) {
  UcxOffer bad = Sample();
  bad.regions[1].id = bad.regions[0].id;  // twice
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.regions[0].size = 0;
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.regions[0].base = UINT64_MAX - 10;  // base + size wraps
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.regions[0].packed_rkey.clear();
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.regions[0].packed_rkey.assign(kMaxPackedRkeyBytes + 1, 'k');
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.worker_address.clear();
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  bad.worker_address.assign(kMaxWorkerAddressBytes + 1, 'w');
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));
  bad = Sample();
  while (bad.regions.size() <= kMaxOfferedRegions) {
    OfferedRegion r = bad.regions[0];
    r.id = static_cast<uint8_t>(bad.regions.size() + 10);
    bad.regions.push_back(r);
  }
  EXPECT_TRUE(Rejected(EncodeOffer(bad)));

  std::vector<uint8_t> bytes = EncodeOffer(Sample());
  bytes[0] = kUcxOfferVersion + 1;  // another version
  EXPECT_TRUE(Rejected(bytes));
  // The memory byte of region 0: version(1) + address(4 + 16) + count(1) + id + kind.
  bytes = EncodeOffer(Sample());
  bytes[1 + 4 + 16 + 1 + 2] = 2;
  EXPECT_TRUE(Rejected(bytes));
  // A length field claiming more than is there.
  bytes = EncodeOffer(Sample());
  bytes[1] = 0xff;
  EXPECT_TRUE(Rejected(bytes));
}

LLMDD_TEST(UcxOffer, CacheKeysMessageRoundTripAndBounds) {
  CacheKeysMessage m;
  m.sender_cluster = 1;
  m.receiver_cluster = 2;
  m.cache_id = 7;
  m.ranges = {{0x1000, 4096, "k1"}, {0x9000, 1, std::string("\0k2", 3)}};
  const std::vector<uint8_t> bytes = EncodeCacheKeys(m);
  CacheKeysMessage out;
  ASSERT_OK(DecodeCacheKeys(bytes.data(), bytes.size(), &out));
  EXPECT_TRUE(out.op == CacheKeysMessage::Op::kAdd);
  EXPECT_EQ(out.sender_cluster, uint64_t{1});
  EXPECT_EQ(out.receiver_cluster, uint64_t{2});
  EXPECT_EQ(out.cache_id, int64_t{7});
  ASSERT_TRUE(out.ranges.size() == 2);
  EXPECT_EQ(out.ranges[1].address, uint64_t{0x9000});
  EXPECT_EQ(out.ranges[1].packed_rkey, std::string("\0k2", 3));
  for (size_t n = 0; n < bytes.size(); ++n) {
    if (DecodeCacheKeys(bytes.data(), n, &out).code() != LLM_LINK_FAILED) {
      LLMDD_FAIL_AT("a prefix of " << n << " bytes was accepted");
    }
  }
  CacheKeysMessage bad = m;
  bad.ranges[0].bytes = 0;
  std::vector<uint8_t> b = EncodeCacheKeys(bad);
  EXPECT_TRUE(DecodeCacheKeys(b.data(), b.size(), &out).code() == LLM_LINK_FAILED);
  bad = m;
  bad.ranges[0].address = UINT64_MAX;  // wraps
  b = EncodeCacheKeys(bad);
  EXPECT_TRUE(DecodeCacheKeys(b.data(), b.size(), &out).code() == LLM_LINK_FAILED);
  bad = m;
  bad.op = CacheKeysMessage::Op::kRemove;  // a removal carries no ranges
  b = EncodeCacheKeys(bad);
  EXPECT_TRUE(DecodeCacheKeys(b.data(), b.size(), &out).code() == LLM_LINK_FAILED);
  bad.ranges.clear();
  b = EncodeCacheKeys(bad);
  ASSERT_OK(DecodeCacheKeys(b.data(), b.size(), &out));
  EXPECT_TRUE(out.op == CacheKeysMessage::Op::kRemove);
}

}  // namespace
}  // namespace llm_datadist::ucx
