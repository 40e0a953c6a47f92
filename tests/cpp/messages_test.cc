// SPDX-License-Identifier: Apache-2.0
// The link protocol's messages (csrc/link/messages.h): every message survives Encode -> Decode,
// the bytes are the ones protocol 4 defines (offsets checked by hand), and malformed input
// (every truncation, enums out of range, counts past their limits) is rejected.
#include <cstring>
#include <string>
#include <vector>

#include "link/messages.h"
#include "test_harness.h"

using namespace llm_datadist;

namespace {

// Decodes every proper prefix of `bytes` with a fresh T and counts those that decoded.
template <typename T>
int DecodablePrefixes(const std::vector<uint8_t> &bytes) {
  int decoded = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    T message;
    if (message.Decode(std::vector<uint8_t>(bytes.begin(), bytes.begin() + static_cast<long>(n)))) ++decoded;
  }
  return decoded;
}

TransferRequest SampleRequest() {
  TransferRequest w;
  w.key_kind = RemoteKeyKind::kBlocksKey;
  w.req_id = 11;
  w.prefix_id = 12;
  w.model_id = 13;
  w.cache_id = -5;
  w.batch_index = 7;
  w.layout = Layout::kBlocksToBlocks;
  w.delivery = Delivery::kStream;
  w.all_tensors = false;
  w.tensor_begin = 2;
  w.tensor_count = 3;
  w.size = 4096;
  w.whole_slot = true;
  w.chunk_bytes = 256;
  w.chunk_count = 9;
  w.blocks = {1, 5, 9};
  w.timeout_ms = 2500;
  w.push_bytes = (1ull << 40) + 3;
  return w;
}

RegionAnnouncement SampleRegion(uint8_t id, RegionKind kind) {
  RegionAnnouncement r;
  r.id = id;
  r.kind = kind;
  r.size = 1ull << 30;
  r.has_memfd = kind != RegionKind::kCudaPool;
  r.has_ipc = kind == RegionKind::kCudaPool;
  for (size_t i = 0; i < sizeof(r.ipc_handle.reserved); ++i) r.ipc_handle.reserved[i] = static_cast<char>(i + id);
  return r;
}

bool SameRegion(const RegionAnnouncement &a, const RegionAnnouncement &b) {
  return a.id == b.id && a.kind == b.kind && a.size == b.size && a.has_memfd == b.has_memfd &&
         a.has_ipc == b.has_ipc && std::memcmp(&a.ipc_handle, &b.ipc_handle, sizeof(a.ipc_handle)) == 0;
}

}  // namespace

LLMDD_TEST(Messages, TransferRequestRoundTrip) {
  const TransferRequest w = SampleRequest();
  const std::vector<uint8_t> bytes = w.Encode();
  // key_kind u8, 3 x u64 ids, i64 cache, u32 batch, 3 x u8, 2 x u32, u64 size, u8, u64, u32, u32 + 3 x u64,
  // u32 timeout, u64 push_bytes (protocol 6)
  EXPECT_EQ(bytes.size(), size_t{1 + 24 + 8 + 4 + 3 + 8 + 8 + 1 + 8 + 4 + 4 + 24 + 4 + 8});
  EXPECT_EQ(bytes[0], uint8_t{2});
  EXPECT_EQ(bytes[1 + 24 + 8 + 4], uint8_t{1});  // layout
  TransferRequest r;
  ASSERT_TRUE(r.Decode(bytes));
  EXPECT_TRUE(r.key_kind == w.key_kind);
  EXPECT_EQ(r.req_id, w.req_id);
  EXPECT_EQ(r.prefix_id, w.prefix_id);
  EXPECT_EQ(r.model_id, w.model_id);
  EXPECT_EQ(r.cache_id, w.cache_id);
  EXPECT_EQ(r.batch_index, w.batch_index);
  EXPECT_TRUE(r.layout == w.layout);
  EXPECT_TRUE(r.delivery == w.delivery);
  EXPECT_EQ(r.all_tensors, w.all_tensors);
  EXPECT_EQ(r.tensor_begin, w.tensor_begin);
  EXPECT_EQ(r.tensor_count, w.tensor_count);
  EXPECT_EQ(r.size, w.size);
  EXPECT_EQ(r.whole_slot, w.whole_slot);
  EXPECT_EQ(r.chunk_bytes, w.chunk_bytes);
  EXPECT_EQ(r.chunk_count, w.chunk_count);
  EXPECT_TRUE(r.blocks == w.blocks);
  EXPECT_EQ(r.timeout_ms, w.timeout_ms);
  EXPECT_EQ(r.push_bytes, w.push_bytes);
  EXPECT_EQ(r.Encode() == bytes, true);
}

LLMDD_TEST(Messages, TransferRequestRejectsMalformed) {
  const std::vector<uint8_t> bytes = SampleRequest().Encode();
  EXPECT_EQ(DecodablePrefixes<TransferRequest>(bytes), 0);
  auto with = [&](size_t offset, uint8_t value) {
    std::vector<uint8_t> b = bytes;
    b[offset] = value;
    TransferRequest r;
    return r.Decode(b);
  };
  const size_t layout = 1 + 24 + 8 + 4, delivery = layout + 1, all = layout + 2;
  const size_t whole_slot = all + 1 + 4 + 4 + 8;
  EXPECT_TRUE(with(0, 3));   // kAddress is a kind
  EXPECT_FALSE(with(0, 4));  // past the last kind
  EXPECT_FALSE(with(layout, 3));
  EXPECT_FALSE(with(delivery, 2));
  EXPECT_FALSE(with(all, 2));
  EXPECT_FALSE(with(whole_slot, 2));
  // A block count past kMaxBlocksPerTransfer, or past the bytes there are.
  std::vector<uint8_t> b = bytes;
  const size_t count = bytes.size() - 4 - 24 - 4 - 8;  // before 3 blocks, the timeout, push_bytes
  uint32_t n = kMaxBlocksPerTransfer + 1;
  std::memcpy(&b[count], &n, 4);
  TransferRequest r;
  EXPECT_FALSE(r.Decode(b));
  n = 4;
  std::memcpy(&b[count], &n, 4);
  EXPECT_FALSE(r.Decode(b));
}

LLMDD_TEST(Messages, StatusRoundTripDropsOperation) {
  DetailedStatus s(LLM_KV_CACHE_NOT_EXIST, "no such cache");
  s.With("operation", "pull_cache").With("cache_id", 42);
  const std::vector<uint8_t> bytes = EncodeStatus(s);
  ByteReader reader(bytes);
  DetailedStatus got;
  ASSERT_TRUE(GetStatus(reader, &got));
  EXPECT_EQ(got.code(), LLM_KV_CACHE_NOT_EXIST);
  EXPECT_EQ(got.message(), std::string("no such cache"));
  ASSERT_TRUE(got.context().size() == 1);
  EXPECT_EQ(got.context()[0].first, std::string("cache_id"));
  EXPECT_EQ(got.context()[0].second, std::string("42"));
  // Every truncation fails; so does a context count past the limit.
  for (size_t n = 0; n < bytes.size(); ++n) {
    ByteReader r(bytes.data(), n);
    DetailedStatus partial;
    EXPECT_FALSE(GetStatus(r, &partial));
  }
  ByteWriter w;
  w.Put<uint32_t>(LLM_FAILED).PutString("x").Put<uint32_t>(kMaxStatusContext + 1);
  ByteReader r(w.bytes());
  EXPECT_FALSE(GetStatus(r, &got));
}

LLMDD_TEST(Messages, PullReplyRoundTrip) {
  PullReply reply;
  reply.owner_stride = 1 << 20;
  reply.slot = 3;
  reply.tensors = {{Location::kRegion, static_cast<uint8_t>(RegionId::kDevicePool), 4096},
                   {Location::kRawHost, 0, 0x7f0000001000ull},
                   {Location::kUnreadable, 0, 0}};
  reply.needs_release = false;
  const std::vector<uint8_t> bytes = reply.Encode();
  // status (4 + 4 + 4), stride, slot, count, 3 x (1 + 1 + 8), needs_release
  EXPECT_EQ(bytes.size(), size_t{12 + 8 + 4 + 4 + 30 + 1});
  PullReply got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_TRUE(got.status.ok());
  EXPECT_EQ(got.owner_stride, reply.owner_stride);
  EXPECT_EQ(got.slot, reply.slot);
  ASSERT_TRUE(got.tensors.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(got.tensors[i].location == reply.tensors[i].location);
    EXPECT_EQ(got.tensors[i].region_id, reply.tensors[i].region_id);
    EXPECT_EQ(got.tensors[i].value, reply.tensors[i].value);
  }
  EXPECT_FALSE(got.needs_release);
  EXPECT_EQ(DecodablePrefixes<PullReply>(bytes), 0);
  std::vector<uint8_t> bad = bytes;
  bad[12 + 8 + 4 + 4] = 3;  // a Location past kUnreadable
  EXPECT_FALSE(got.Decode(bad));
  bad = bytes;
  bad.back() = 2;  // needs_release is a flag
  EXPECT_FALSE(got.Decode(bad));
  bad = bytes;
  const uint32_t huge = kMaxDescribedTensors + 1;
  std::memcpy(&bad[12 + 8 + 4], &huge, 4);
  EXPECT_FALSE(got.Decode(bad));
}

LLMDD_TEST(Messages, PullReplyRefusalIsTheStatusOnly) {
  PullReply reply;
  reply.status = DetailedStatus(LLM_PARAM_INVALID, "no");
  reply.owner_stride = 99;  // not sent with a refusal
  const std::vector<uint8_t> bytes = reply.Encode();
  EXPECT_TRUE(bytes == EncodeStatus(reply.status));
  PullReply got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_EQ(got.status.code(), LLM_PARAM_INVALID);
  EXPECT_EQ(got.owner_stride, uint64_t{0});
}

LLMDD_TEST(Messages, Release) {
  ReleaseMessage m;
  m.success = true;
  EXPECT_TRUE(m.Encode() == std::vector<uint8_t>{1});
  ReleaseMessage got;
  ASSERT_TRUE(got.Decode({1}));
  EXPECT_TRUE(got.success);
  ASSERT_TRUE(got.Decode({0}));
  EXPECT_FALSE(got.success);
  EXPECT_FALSE(got.Decode({}));
}

LLMDD_TEST(Messages, PushCompleteRoundTripAndMalformed) {
  PushComplete m;
  m.push_request_id = 0x0102030405060708ull;
  m.success = true;
  const std::vector<uint8_t> bytes = m.Encode();
  EXPECT_TRUE(bytes == (std::vector<uint8_t>{8, 7, 6, 5, 4, 3, 2, 1, 1}));
  PushComplete got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_EQ(got.push_request_id, m.push_request_id);
  EXPECT_TRUE(got.success);
  EXPECT_EQ(DecodablePrefixes<PushComplete>(bytes), 0);
  std::vector<uint8_t> b = bytes;
  b[8] = 0;
  ASSERT_TRUE(got.Decode(b));
  EXPECT_FALSE(got.success);
  b[8] = 2;  // a flag is 0 or 1
  EXPECT_FALSE(got.Decode(b));
}

LLMDD_TEST(Messages, PushDescribeReplyIsAPullReply) {
  PushDescribeReply reply;
  reply.owner_stride = 4096;
  reply.slot = 3;
  reply.tensors.resize(2);
  reply.tensors[0].location = Location::kRegion;
  reply.tensors[0].region_id = 1;
  reply.tensors[0].value = 8192;
  reply.tensors[1].location = Location::kRawHost;
  reply.tensors[1].value = 0x7f0000001000ull;
  PushDescribeReply got;
  ASSERT_TRUE(got.Decode(reply.Encode()));
  EXPECT_EQ(got.owner_stride, uint64_t{4096});
  EXPECT_EQ(got.slot, uint32_t{3});
  ASSERT_TRUE(got.tensors.size() == 2);
  EXPECT_TRUE(got.tensors[1].location == Location::kRawHost);
  EXPECT_EQ(got.tensors[1].value, reply.tensors[1].value);
  EXPECT_TRUE(got.needs_release);
}

LLMDD_TEST(Messages, HelloAndReply) {
  HelloMessage hello;
  hello.client_id = 1;
  hello.expected_server_id = 2;
  for (size_t i = 0; i < kNonceBytes; ++i) hello.nonce[i] = static_cast<uint8_t>(0xa0 + i);
  hello.has_secret = true;
  const std::vector<uint8_t> bytes = hello.Encode();
  EXPECT_EQ(bytes.size(), size_t{8 + 8 + 16 + 1});
  HelloMessage got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_EQ(got.client_id, uint64_t{1});
  EXPECT_EQ(got.expected_server_id, uint64_t{2});
  EXPECT_TRUE(got.nonce == hello.nonce);
  EXPECT_TRUE(got.has_secret);
  EXPECT_EQ(DecodablePrefixes<HelloMessage>(bytes), 0);

  HelloReply reply;
  reply.server_id = 2;
  reply.nonce = hello.nonce;
  reply.has_secret = false;
  const std::vector<uint8_t> reply_bytes = reply.Encode();
  EXPECT_EQ(reply_bytes.size(), size_t{4 + 4 + 8 + 16 + 1});
  HelloReply got_reply;
  ASSERT_TRUE(got_reply.Decode(reply_bytes));
  EXPECT_EQ(got_reply.status, LLM_SUCCESS);
  EXPECT_EQ(got_reply.server_id, uint64_t{2});
  EXPECT_TRUE(got_reply.nonce == hello.nonce);
  EXPECT_FALSE(got_reply.has_secret);
  EXPECT_EQ(DecodablePrefixes<HelloReply>(reply_bytes), 0);

  HelloReply refusal;
  refusal.status = LLM_LINK_FAILED;
  refusal.message = "this listener is cluster 3, not 2";
  const std::vector<uint8_t> refusal_bytes = refusal.Encode();
  EXPECT_EQ(refusal_bytes.size(), size_t{4 + 4 + refusal.message.size()});
  ASSERT_TRUE(got_reply.Decode(refusal_bytes));
  EXPECT_EQ(got_reply.status, LLM_LINK_FAILED);
  EXPECT_EQ(got_reply.message, refusal.message);
}

LLMDD_TEST(Messages, AuthWithRegionsAndOffers) {
  AuthMessage auth;
  for (size_t i = 0; i < auth.mac.size(); ++i) auth.mac[i] = static_cast<uint8_t>(i);
  auth.boot_id = "0b1f5c1e-boot";
  auth.pid = 4242;
  auth.regions = {SampleRegion(0, RegionKind::kHostPool), SampleRegion(1, RegionKind::kCudaPool),
                  SampleRegion(2, RegionKind::kCacheTable)};
  const std::vector<uint8_t> plain = auth.Encode();
  // No offers: exactly protocol 4's kAuth (mac, boot id, pid, regions) and nothing after.
  const size_t region_bytes = 1 + 1 + 8 + 1 + 1 + sizeof(cuda::CUipcMemHandle);
  EXPECT_EQ(plain.size(), 32 + 4 + auth.boot_id.size() + 4 + 4 + 3 * region_bytes);
  EXPECT_EQ(DecodablePrefixes<AuthMessage>(plain), 0);
  AuthMessage got;
  ASSERT_TRUE(got.Decode(plain));
  EXPECT_TRUE(got.mac == auth.mac);
  EXPECT_EQ(got.boot_id, auth.boot_id);
  EXPECT_EQ(got.pid, auth.pid);
  ASSERT_TRUE(got.regions.size() == 3);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(SameRegion(got.regions[i], auth.regions[i]));
  EXPECT_TRUE(got.offers.empty());

  // Offers with bytes follow the regions; empty ones are not sent.
  auth.offers = {{TransportKind::kUcx, {1, 2, 3, 4}}, {TransportKind::kShm, {}}};
  const std::vector<uint8_t> offered = auth.Encode();
  EXPECT_EQ(offered.size(), plain.size() + 4 + 1 + 4 + 4);
  EXPECT_TRUE(std::vector<uint8_t>(offered.begin(), offered.begin() + static_cast<long>(plain.size())) == plain);
  ASSERT_TRUE(got.Decode(offered));
  ASSERT_TRUE(got.offers.size() == 1);
  EXPECT_TRUE(got.offers[0].kind == TransportKind::kUcx);
  EXPECT_TRUE(got.offers[0].bytes == (std::vector<uint8_t>{1, 2, 3, 4}));
  // The only decodable prefix is the one that ends with the regions (no offers at all).
  EXPECT_EQ(DecodablePrefixes<AuthMessage>(offered), 1);
}

LLMDD_TEST(Messages, AuthRejectsBadRegionsAndOffers) {
  AuthMessage auth;
  auth.boot_id = "b";
  auth.regions = {SampleRegion(0, RegionKind::kHostPool)};
  std::vector<uint8_t> bytes = auth.Encode();
  const size_t kind_at = 32 + 4 + 1 + 4 + 4 + 1;
  std::vector<uint8_t> bad = bytes;
  bad[kind_at] = kMaxRegionKind + 1;
  AuthMessage got;
  EXPECT_FALSE(got.Decode(bad));
  // More regions than a handshake may announce.
  auth.regions.assign(kMaxHandshakeRegions + 1, SampleRegion(0, RegionKind::kHostPool));
  EXPECT_FALSE(got.Decode(auth.Encode()));
  // Offer sections: a zero count, too many offers, an empty offer, a length past the end.
  auth.regions = {SampleRegion(0, RegionKind::kHostPool)};
  const std::vector<uint8_t> base = auth.Encode();
  auto with_tail = [&](const ByteWriter &tail) {
    std::vector<uint8_t> b = base;
    b.insert(b.end(), tail.bytes().begin(), tail.bytes().end());
    AuthMessage m;
    return m.Decode(b);
  };
  ByteWriter zero;
  zero.Put<uint32_t>(0);
  EXPECT_FALSE(with_tail(zero));
  ByteWriter many;
  many.Put<uint32_t>(kMaxTransportOffers + 1);
  EXPECT_FALSE(with_tail(many));
  ByteWriter empty;
  empty.Put<uint32_t>(1).Put<uint8_t>(4).Put<uint32_t>(0);
  EXPECT_FALSE(with_tail(empty));
  ByteWriter past;
  past.Put<uint32_t>(1).Put<uint8_t>(4).Put<uint32_t>(100).Put<uint8_t>(7);
  EXPECT_FALSE(with_tail(past));
  ByteWriter good;
  good.Put<uint32_t>(1).Put<uint8_t>(4).Put<uint32_t>(1).Put<uint8_t>(7);
  EXPECT_TRUE(with_tail(good));
}

LLMDD_TEST(Messages, AuthReplyRoundTripAndRefusal) {
  AuthReply reply;
  reply.mac[0] = 9;
  reply.boot_id = "boot";
  reply.pid = 77;
  reply.unix_name = "llmdd-77-00ff";
  reply.regions = {SampleRegion(0, RegionKind::kHostPool), SampleRegion(1, RegionKind::kCpuDevicePool)};
  reply.offers = {{TransportKind::kUcx, std::vector<uint8_t>(300, 5)}};
  const std::vector<uint8_t> bytes = reply.Encode();
  AuthReply got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_EQ(got.status, LLM_SUCCESS);
  EXPECT_TRUE(got.mac == reply.mac);
  EXPECT_EQ(got.boot_id, reply.boot_id);
  EXPECT_EQ(got.pid, reply.pid);
  EXPECT_EQ(got.unix_name, reply.unix_name);
  ASSERT_TRUE(got.regions.size() == 2);
  EXPECT_TRUE(SameRegion(got.regions[1], reply.regions[1]));
  ASSERT_TRUE(got.offers.size() == 1);
  EXPECT_TRUE(got.offers[0].bytes == reply.offers[0].bytes);
  EXPECT_EQ(DecodablePrefixes<AuthReply>(bytes), 1);  // the one ending with the regions
  // A Unix socket name longer than sun_path allows.
  reply.offers.clear();
  reply.unix_name = std::string(kMaxUnixNameBytes + 1, 'n');
  EXPECT_FALSE(got.Decode(reply.Encode()));

  AuthReply refusal;
  refusal.status = LLM_ALREADY_LINK;
  refusal.message = "cluster 1 already has a live link";
  const std::vector<uint8_t> refusal_bytes = refusal.Encode();
  EXPECT_EQ(refusal_bytes.size(), size_t{4 + 4 + refusal.message.size()});
  ASSERT_TRUE(got.Decode(refusal_bytes));
  EXPECT_EQ(got.status, LLM_ALREADY_LINK);
  EXPECT_EQ(got.message, refusal.message);
}

LLMDD_TEST(Messages, ShmAbortAndLinkAck) {
  ShmAbortMessage abort_message;
  abort_message.reason = "tcp forced";
  ShmAbortMessage got_abort;
  ASSERT_TRUE(got_abort.Decode(abort_message.Encode()));
  EXPECT_EQ(got_abort.reason, abort_message.reason);
  abort_message.reason = std::string(kMaxShmAbortReason + 1, 'r');
  EXPECT_FALSE(got_abort.Decode(abort_message.Encode()));

  LinkAck ack;
  ack.pools_mapped = true;
  ack.reason = "same host: pools shared through memfd";
  ack.frames_on_channel = true;
  const std::vector<uint8_t> bytes = ack.Encode();
  // status, empty message, transport byte 1 (kShm), reason, frames flag
  EXPECT_EQ(bytes.size(), size_t{4 + 4 + 1 + 4 + ack.reason.size() + 1});
  EXPECT_EQ(bytes[8], uint8_t{1});
  LinkAck got;
  ASSERT_TRUE(got.Decode(bytes));
  EXPECT_EQ(got.status, LLM_SUCCESS);
  EXPECT_TRUE(got.pools_mapped);
  EXPECT_EQ(got.reason, ack.reason);
  EXPECT_TRUE(got.frames_on_channel);
  EXPECT_EQ(DecodablePrefixes<LinkAck>(bytes), 0);
  // A refusal is a whole acknowledgement: code, message, transport 0, no reason, frames 0.
  LinkAck refusal;
  refusal.status = LLM_ALREADY_LINK;
  refusal.message = "raced";
  ByteWriter expected;
  expected.Put<uint32_t>(LLM_ALREADY_LINK).PutString("raced").Put<uint8_t>(0).PutString("").Put<uint8_t>(0);
  EXPECT_TRUE(refusal.Encode() == expected.bytes());
}
