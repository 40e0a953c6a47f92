// SPDX-License-Identifier: Apache-2.0
// Transfer metrics: operations, bytes, latency histograms and errors by status code, by kind of
// operation. One `Metrics` per link (the link owns it) and one per engine (process totals, which
// outlive links so that they only ever grow, as a scraper expects of counters).
//
// Cost: a record is a handful of relaxed atomic adds on counters no lock guards; the bucket is
// found with one count-leading-zeros, no loop and no table. Failures also look the code's row up
// in the status table (a hash lookup), off the success path.
// Thread-safety: Record and Snapshot may run concurrently from any thread; a snapshot is not an
// atomic cut across counters (each one is exact, a concurrent operation may show in one and not
// yet in another).
#ifndef LLM_DATADIST_COMMON_METRICS_H_
#define LLM_DATADIST_COMMON_METRICS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist {

// What an operation was. Requester side: the four API calls (transfer_cache_async and the
// layer-wise pushes go through push_cache / push_blocks). Owner side: a peer's pull it served
// (bytes it sent, or 0 when the peer read them one-sided) and a peer's push it received.
enum class OpKind : uint8_t { kPullCache, kPullBlocks, kPushCache, kPushBlocks, kServePull, kServePush };
constexpr size_t kOpKinds = 6;
const char *OpKindName(OpKind kind);  // "pull_cache", ..., "serve_pull", "serve_push"

// Latency buckets, defined here once: bucket i < kLatencyBounds counts durations of at most
// 2^i microseconds (1 us, 2 us, 4 us, ... 2^26 us = 67 s); the last bucket counts the rest.
// Powers of two make the bucket one bit scan of the microseconds.
constexpr size_t kLatencyBounds = 27;
constexpr size_t kLatencyBuckets = kLatencyBounds + 1;
// Upper bound of bucket i in seconds (i < kLatencyBounds).
constexpr double LatencyBoundSeconds(size_t i) { return static_cast<double>(uint64_t{1} << i) * 1e-6; }
inline size_t LatencyBucket(uint64_t ns) {
  // ceil(ns / 1000) microseconds, then the smallest i with us <= 2^i.
  const uint64_t us = (ns + 999) / 1000;
  if (us <= 1) return 0;
  const size_t i = static_cast<size_t>(64 - __builtin_clzll(us - 1));
  return i < kLatencyBounds ? i : kLatencyBounds;
}

// Rows of status_table.def, counted at compile time: errors are counted per row, plus one slot
// for a code outside the table.
constexpr size_t kStatusRows = 0
#define LLMDD_STATUS(...) +1
#define LLMDD_PY_STATUS(...) +1
#include "llm_datadist/status_table.def"
#undef LLMDD_PY_STATUS
#undef LLMDD_STATUS
    ;
constexpr size_t kErrorSlots = kStatusRows + 1;

// Monotonic nanoseconds (steady clock) for latencies.
uint64_t MetricsNowNs();

// A copy of one kind's counters, for readers.
struct OpSnapshot {
  uint64_t operations = 0;  // completed successfully (what the histogram counts)
  uint64_t bytes = 0;       // moved by those operations
  uint64_t errors = 0;      // failed operations, all codes
  uint64_t latency_ns_sum = 0;
  std::array<uint64_t, kLatencyBuckets> latency_buckets{};  // per bucket, not cumulative
  std::vector<std::pair<int64_t, uint64_t>> errors_by_code;  // (status code, count), counts > 0 only
};

struct MetricsSnapshot {
  std::array<OpSnapshot, kOpKinds> kinds;
};

class Metrics {
 public:
  // One finished operation: on success its bytes and latency, on failure its code.
  void Record(OpKind kind, Status code, uint64_t bytes, uint64_t latency_ns) {
    Kind &k = kinds_[static_cast<size_t>(kind)];
    if (code == LLM_SUCCESS) {
      k.operations.fetch_add(1, std::memory_order_relaxed);
      k.bytes.fetch_add(bytes, std::memory_order_relaxed);
      k.latency_ns_sum.fetch_add(latency_ns, std::memory_order_relaxed);
      k.buckets[LatencyBucket(latency_ns)].fetch_add(1, std::memory_order_relaxed);
    } else {
      RecordError(k, code);
    }
  }
  MetricsSnapshot Snapshot() const;
  // Totals across kinds, for link_info's counters.
  uint64_t Operations(OpKind kind) const { return kinds_[static_cast<size_t>(kind)].operations.load(std::memory_order_relaxed); }
  uint64_t Bytes(OpKind kind) const { return kinds_[static_cast<size_t>(kind)].bytes.load(std::memory_order_relaxed); }
  uint64_t Errors(OpKind kind) const { return kinds_[static_cast<size_t>(kind)].errors.load(std::memory_order_relaxed); }

 private:
  struct Kind {
    std::atomic<uint64_t> operations{0};
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> errors{0};
    std::atomic<uint64_t> latency_ns_sum{0};
    std::array<std::atomic<uint64_t>, kLatencyBuckets> buckets{};
    std::array<std::atomic<uint64_t>, kErrorSlots> errors_by_row{};
  };
  static void RecordError(Kind &k, Status code);
  std::array<Kind, kOpKinds> kinds_{};
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_COMMON_METRICS_H_
