// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "memory/memory_pool.h"
#include "memory/page_allocator.h"
#include "test_harness.h"

using llm_datadist::PageAllocator;

LLMDD_TEST(PageAllocator, RoundsToPagesAndCoalesces) {
  PageAllocator alloc(10 * 4096 + 100, 12);  // the 100-byte tail is not a whole page
  EXPECT_EQ(alloc.capacity(), uint64_t{10 * 4096});
  auto a = alloc.Allocate(1);
  auto b = alloc.Allocate(4097);
  auto c = alloc.Allocate(4096);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(alloc.AllocationSize(*a), uint64_t{4096});
  EXPECT_EQ(alloc.AllocationSize(*b), uint64_t{8192});
  EXPECT_EQ(alloc.used_bytes(), uint64_t{4 * 4096});
  EXPECT_TRUE(alloc.Free(*b));
  EXPECT_EQ(alloc.free_range_count(), size_t{2});  // the hole and the tail
  EXPECT_TRUE(alloc.Free(*a));
  EXPECT_EQ(alloc.free_range_count(), size_t{2});  // hole merged with a's range
  EXPECT_TRUE(alloc.Free(*c));
  EXPECT_EQ(alloc.free_range_count(), size_t{1});
  EXPECT_EQ(alloc.largest_free_range(), alloc.capacity());
}

LLMDD_TEST(PageAllocator, RejectsZeroOversizeAndDoubleFree) {
  PageAllocator alloc(1 << 20, 16);
  EXPECT_FALSE(alloc.Allocate(0).has_value());
  EXPECT_FALSE(alloc.Allocate((1 << 20) + 1).has_value());
  auto a = alloc.Allocate(1 << 20);
  ASSERT_TRUE(a.has_value());
  EXPECT_FALSE(alloc.Allocate(1).has_value());
  EXPECT_TRUE(alloc.Free(*a));
  EXPECT_FALSE(alloc.Free(*a));        // double free: refused, nothing changes
  EXPECT_FALSE(alloc.Free(12345));     // foreign offset
  EXPECT_EQ(alloc.free_bytes(), alloc.capacity());
}

LLMDD_TEST(PageAllocator, BestFitPicksSmallestHole) {
  PageAllocator alloc(16 * 1024, 10);
  std::vector<uint64_t> offs;
  for (int i = 0; i < 16; ++i) offs.push_back(*alloc.Allocate(1024));
  // Holes of 1, 3 and 2 pages.
  alloc.Free(offs[1]);
  alloc.Free(offs[4]); alloc.Free(offs[5]); alloc.Free(offs[6]);
  alloc.Free(offs[10]); alloc.Free(offs[11]);
  auto two = alloc.Allocate(2048);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(*two, offs[10]);
  auto one = alloc.Allocate(1024);
  EXPECT_EQ(*one, offs[1]);
}

// 100k random allocate/free calls of mixed sizes; afterwards everything is freed and the pool
// must be exactly one free range. Checks the accounting invariants along the way.
LLMDD_TEST(PageAllocator, RandomStressEndsFullyCoalesced) {
  const uint32_t shift = 12;
  PageAllocator alloc(uint64_t{1} << 30, shift);
  std::mt19937_64 rng(42);
  std::vector<std::pair<uint64_t, uint64_t>> live;  // offset, rounded size
  uint64_t expected_used = 0;
  size_t failures = 0;
  for (int op = 0; op < 100000; ++op) {
    bool do_alloc = live.empty() || (rng() % 100) < 55;
    if (do_alloc) {
      // Mixed sizes: mostly small, some large, some not page multiples.
      uint64_t kind = rng() % 10;
      uint64_t bytes = kind < 6 ? 1 + rng() % 16384 : kind < 9 ? 1 + rng() % (1 << 20) : 1 + rng() % (16 << 20);
      auto off = alloc.Allocate(bytes);
      if (!off) {
        ++failures;
        continue;
      }
      uint64_t rounded = (bytes + 4095) & ~uint64_t{4095};
      EXPECT_EQ(alloc.AllocationSize(*off), rounded);
      live.emplace_back(*off, rounded);
      expected_used += rounded;
    } else {
      size_t i = rng() % live.size();
      if (!alloc.Free(live[i].first)) LLMDD_FAIL_AT("free failed for a live allocation");
      expected_used -= live[i].second;
      live[i] = live.back();
      live.pop_back();
    }
    if (op % 10000 == 0) {
      EXPECT_EQ(alloc.used_bytes(), expected_used);
      // No two live allocations overlap.
      auto sorted = live;
      std::sort(sorted.begin(), sorted.end());
      for (size_t k = 1; k < sorted.size(); ++k)
        if (sorted[k - 1].first + sorted[k - 1].second > sorted[k].first) LLMDD_FAIL_AT("overlapping allocations");
    }
  }
  EXPECT_EQ(alloc.allocation_count(), live.size());
  for (auto &a : live) EXPECT_TRUE(alloc.Free(a.first));
  EXPECT_EQ(alloc.used_bytes(), uint64_t{0});
  EXPECT_EQ(alloc.free_range_count(), size_t{1});
  EXPECT_EQ(alloc.largest_free_range(), alloc.capacity());
  std::cout << "  (" << failures << " allocations did not fit and were refused)\n";
}

LLMDD_TEST(PoolConfig, ParsesAndRejects) {
  using llm_datadist::LLM_PARAM_INVALID;
  using llm_datadist::ParsePoolConfig;
  using llm_datadist::PoolConfig;
  PoolConfig cfg;
  ASSERT_OK(ParsePoolConfig("{\"memory_size\": 1048576}", "mem_pool_cfg", &cfg));
  EXPECT_EQ(cfg.memory_size, uint64_t{1048576});
  EXPECT_EQ(cfg.page_shift, uint32_t{16});
  ASSERT_OK(ParsePoolConfig("{\"memory_size\": 4096, \"page_shift\": 10}", "mem_pool_cfg", &cfg));
  EXPECT_EQ(cfg.page_shift, uint32_t{10});
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": 4096, \"page_shift\": 9}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": 4096, \"page_shift\": 31}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": 0}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": -5}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"page_shift\": 16}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": 1000}", "x", &cfg), LLM_PARAM_INVALID);  // < one page
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": 1.5e9}", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("not json", "x", &cfg), LLM_PARAM_INVALID);
  EXPECT_CODE(ParsePoolConfig("{\"memory_size\": {\"a\": 1}}", "x", &cfg), LLM_PARAM_INVALID);
}

LLMDD_TEST(MemoryPool, AllocationsReturnOnRelease) {
  using namespace llm_datadist;
  std::shared_ptr<MemoryPool> pool;
  ASSERT_OK(MemoryPool::Create(MemoryKind::kHost, PoolConfig{1 << 20, 12}, -1, &pool));
  EXPECT_TRUE(pool->fd() >= 0);
  std::shared_ptr<PoolAllocation> a, b;
  ASSERT_OK(pool->Allocate(5000, &a));
  ASSERT_OK(pool->Allocate(1 << 19, &b));
  EXPECT_EQ(a->bytes(), uint64_t{8192});
  std::memset(a->data(), 0xab, a->bytes());
  std::shared_ptr<PoolAllocation> too_big;
  EXPECT_CODE(pool->Allocate(1 << 20, &too_big), LLM_OUT_OF_MEMORY);
  a.reset();
  b.reset();
  PoolStats stats = pool->Stats();
  EXPECT_EQ(stats.used_bytes, uint64_t{0});
  EXPECT_EQ(stats.free_range_count, uint64_t{1});
}
