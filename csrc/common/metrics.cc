// SPDX-License-Identifier: Apache-2.0
#include "common/metrics.h"

#include <chrono>

namespace llm_datadist {

const char *OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kPullCache: return "pull_cache";
    case OpKind::kPullBlocks: return "pull_blocks";
    case OpKind::kPushCache: return "push_cache";
    case OpKind::kPushBlocks: return "push_blocks";
    case OpKind::kServePull: return "serve_pull";
    case OpKind::kServePush: return "serve_push";
  }
  return "unknown";
}

uint64_t MetricsNowNs() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

void Metrics::RecordError(Kind &k, Status code) {
  k.errors.fetch_add(1, std::memory_order_relaxed);
  const StatusInfo *info = FindStatusInfo(static_cast<int64_t>(code));
  const size_t row = info == nullptr ? kStatusRows : static_cast<size_t>(info - AllStatusInfo().data());
  k.errors_by_row[row < kStatusRows ? row : kStatusRows].fetch_add(1, std::memory_order_relaxed);
}

MetricsSnapshot Metrics::Snapshot() const {
  MetricsSnapshot out;
  const std::vector<StatusInfo> &rows = AllStatusInfo();
  for (size_t i = 0; i < kOpKinds; ++i) {
    const Kind &k = kinds_[i];
    OpSnapshot &s = out.kinds[i];
    s.operations = k.operations.load(std::memory_order_relaxed);
    s.bytes = k.bytes.load(std::memory_order_relaxed);
    s.errors = k.errors.load(std::memory_order_relaxed);
    s.latency_ns_sum = k.latency_ns_sum.load(std::memory_order_relaxed);
    for (size_t b = 0; b < kLatencyBuckets; ++b) s.latency_buckets[b] = k.buckets[b].load(std::memory_order_relaxed);
    for (size_t r = 0; r < kErrorSlots; ++r) {
      const uint64_t n = k.errors_by_row[r].load(std::memory_order_relaxed);
      // A code outside the table counts as -1, LLM_UNKNOWN_ERROR.s value.
      if (n > 0) s.errors_by_code.emplace_back(r < rows.size() ? rows[r].value : -1, n);
    }
  }
  return out;
}

}  // namespace llm_datadist
