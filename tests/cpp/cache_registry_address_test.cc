// SPDX-License-Identifier: Apache-2.0
// CacheRegistry::FindAddress: how an owner finds the destination of a push named by address
// (upstream's TransferConfig). Hits inside a tensor only; ranges that cross a tensor's end, or
// would wrap 64 bits, miss.
#include <memory>

#include "cache/cache_registry.h"
#include "test_harness.h"

using llm_datadist::CacheEntry;
using llm_datadist::CacheRegistry;

namespace {

std::shared_ptr<CacheEntry> Entry(int64_t id, std::vector<uintptr_t> addrs, uint64_t tensor_bytes) {
  auto entry = std::make_shared<CacheEntry>();
  entry->cache_id = id;
  entry->desc.num_tensors = static_cast<uint32_t>(addrs.size());
  entry->desc.shape = {4, static_cast<int64_t>(tensor_bytes / 4)};
  entry->tensor_bytes = tensor_bytes;
  entry->stride = tensor_bytes / 4;
  entry->tensor_addrs = std::move(addrs);
  entry->is_registered = true;
  return entry;
}

}  // namespace

LLMDD_TEST(CacheRegistryAddress, FindsTheTensorAndOffset) {
  CacheRegistry registry;
  ASSERT_OK(registry.Add(Entry(1, {0x10000, 0x20000}, 0x1000), {}, std::nullopt));
  ASSERT_OK(registry.Add(Entry(2, {0x30000}, 0x1000), {}, std::nullopt));
  auto hit = registry.FindAddress(0x20400, 0x400);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->entry->cache_id, 1);
  EXPECT_EQ(hit->tensor, 1u);
  EXPECT_EQ(hit->offset, uint64_t{0x400});
  hit = registry.FindAddress(0x30000, 0x1000);  // the whole tensor
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->entry->cache_id, 2);
  EXPECT_EQ(hit->offset, uint64_t{0});
}

LLMDD_TEST(CacheRegistryAddress, RangesOutsideATensorMiss) {
  CacheRegistry registry;
  ASSERT_OK(registry.Add(Entry(1, {0x10000, 0x11000}, 0x1000), {}, std::nullopt));
  EXPECT_FALSE(registry.FindAddress(0xF000, 0x10).has_value());          // before
  EXPECT_FALSE(registry.FindAddress(0x10F00, 0x200).has_value());        // crosses into the next tensor
  EXPECT_FALSE(registry.FindAddress(0x12000, 1).has_value());            // just past the end
  EXPECT_FALSE(registry.FindAddress(0x10800, ~uint64_t{0}).has_value()); // would wrap 64 bits
  EXPECT_FALSE(registry.FindAddress(~uint64_t{0}, 2).has_value());
  EXPECT_TRUE(registry.FindAddress(0x11FFF, 1).has_value());             // the last byte
}
