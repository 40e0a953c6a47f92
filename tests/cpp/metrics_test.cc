// SPDX-License-Identifier: Apache-2.0
#include <thread>
#include <vector>

#include "common/metrics.h"
#include "test_harness.h"

using namespace llm_datadist;

LLMDD_TEST(Metrics, LatencyBucketBounds) {
  // Bucket i holds durations of at most 2^i us; a nanosecond past a bound is the next bucket.
  EXPECT_EQ(LatencyBucket(0), size_t{0});
  EXPECT_EQ(LatencyBucket(1000), size_t{0});
  EXPECT_EQ(LatencyBucket(1001), size_t{1});
  EXPECT_EQ(LatencyBucket(2000), size_t{1});
  EXPECT_EQ(LatencyBucket(2001), size_t{2});
  EXPECT_EQ(LatencyBucket(1024000), size_t{10});
  EXPECT_EQ(LatencyBucket(1024001), size_t{11});
  const uint64_t last_bound_ns = (uint64_t{1} << (kLatencyBounds - 1)) * 1000;  // 67 s
  EXPECT_EQ(LatencyBucket(last_bound_ns), kLatencyBounds - 1);
  EXPECT_EQ(LatencyBucket(last_bound_ns + 1), kLatencyBounds);  // the overflow bucket
  EXPECT_EQ(LatencyBucket(~uint64_t{0} - 1000), kLatencyBounds);
  for (size_t i = 0; i < kLatencyBounds; ++i) {
    const uint64_t bound_ns = static_cast<uint64_t>(LatencyBoundSeconds(i) * 1e9 + 0.5);
    EXPECT_EQ(LatencyBucket(bound_ns), i);
    EXPECT_EQ(LatencyBucket(bound_ns + 1), i + 1);
  }
}

LLMDD_TEST(Metrics, RecordAndSnapshot) {
  Metrics m;
  m.Record(OpKind::kPullBlocks, LLM_SUCCESS, 4096, 1500);
  m.Record(OpKind::kPullBlocks, LLM_SUCCESS, 4096, 3000000);
  m.Record(OpKind::kPullBlocks, LLM_KV_CACHE_NOT_EXIST, 4096, 0);
  m.Record(OpKind::kPullBlocks, LLM_KV_CACHE_NOT_EXIST, 0, 0);
  m.Record(OpKind::kPushCache, 0x12345678U, 0, 0);  // a code outside the table
  const MetricsSnapshot s = m.Snapshot();
  const OpSnapshot &pull = s.kinds[static_cast<size_t>(OpKind::kPullBlocks)];
  EXPECT_EQ(pull.operations, uint64_t{2});
  EXPECT_EQ(pull.bytes, uint64_t{8192});  // failed operations move no bytes
  EXPECT_EQ(pull.errors, uint64_t{2});
  EXPECT_EQ(pull.latency_ns_sum, uint64_t{3001500});
  EXPECT_EQ(pull.latency_buckets[1], uint64_t{1});   // 1.5 us <= 2 us
  EXPECT_EQ(pull.latency_buckets[12], uint64_t{1});  // 3 ms <= 4.096 ms
  uint64_t in_buckets = 0;
  for (uint64_t n : pull.latency_buckets) in_buckets += n;
  EXPECT_EQ(in_buckets, uint64_t{2});
  ASSERT_TRUE(pull.errors_by_code.size() == 1);
  EXPECT_EQ(pull.errors_by_code[0].first, static_cast<int64_t>(LLM_KV_CACHE_NOT_EXIST));
  EXPECT_EQ(pull.errors_by_code[0].second, uint64_t{2});
  const OpSnapshot &push = s.kinds[static_cast<size_t>(OpKind::kPushCache)];
  ASSERT_TRUE(push.errors_by_code.size() == 1);
  EXPECT_EQ(push.errors_by_code[0].first, int64_t{-1});
  EXPECT_EQ(s.kinds[static_cast<size_t>(OpKind::kPullCache)].operations, uint64_t{0});
  EXPECT_EQ(m.Operations(OpKind::kPullBlocks), uint64_t{2});
  EXPECT_EQ(m.Bytes(OpKind::kPullBlocks), uint64_t{8192});
  EXPECT_EQ(m.Errors(OpKind::kPushCache), uint64_t{1});
  EXPECT_EQ(std::string(OpKindName(OpKind::kServePush)), std::string("serve_push"));
}

LLMDD_TEST(Metrics, ConcurrentRecordsAreExact) {
  Metrics m;
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kEach; ++i) m.Record(OpKind::kServePull, (i % 10 == 0) ? LLM_TIMEOUT : LLM_SUCCESS, 3, 1000u * t);
    });
  for (std::thread &t : threads) t.join();
  const OpSnapshot s = m.Snapshot().kinds[static_cast<size_t>(OpKind::kServePull)];
  EXPECT_EQ(s.operations, uint64_t{kThreads * kEach * 9 / 10});
  EXPECT_EQ(s.errors, uint64_t{kThreads * kEach / 10});
  EXPECT_EQ(s.bytes, uint64_t{3} * s.operations);
}
