// SPDX-License-Identifier: Apache-2.0
// The published blocks-cache table: where each BlocksCacheKey's tensors live, in a small memfd
// that linked peers on the same host map read-only. It lets a peer resolve a pull_blocks by
// BlocksCacheKey without a round trip to the owner (upstream's remote-cache-accessible reads).
//
// The owner rewrites the whole table on every change (blocks caches change rarely) under a
// sequence lock: seq is odd while writing. Readers copy the entry they need and retry when seq
// moved. Readers never trust the contents: every size is bounded by the mapping, and the
// requester checks every offset against the pool it mapped before reading.
#ifndef LLM_DATADIST_CACHE_CACHE_TABLE_H_
#define LLM_DATADIST_CACHE_CACHE_TABLE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist {

constexpr uint64_t kCacheTableBytes = 4ull << 20;

// Where a published cache's tensors are.
enum class TableLocation : uint8_t { kRegion = 0, kRawHost = 1 };

struct TableEntry {
  uint64_t model_id = 0;
  int64_t cache_id = -1;
  uint64_t stride = 0;      // bytes per block
  uint64_t num_blocks = 0;  // shape[0]
  TableLocation location = TableLocation::kRegion;
  uint8_t region_id = 0;
  std::vector<uint64_t> tensors;  // offset in the region, or raw address, per tensor
};

class CacheTablePublisher {
 public:
  CacheTablePublisher() = default;
  ~CacheTablePublisher();
  CacheTablePublisher(const CacheTablePublisher &) = delete;
  CacheTablePublisher &operator=(const CacheTablePublisher &) = delete;

  DetailedStatus Create();
  // Replaces the table's contents. Entries that do not fit are left out (logged): those keys
  // are then served by the two-sided path.
  void Publish(const std::vector<TableEntry> &entries);
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  uint8_t *base_ = nullptr;
};

// Looks `model_id` up in a peer's table mapped at `table` (`size` bytes). nullopt when absent,
// when the table is malformed, or when it kept changing while being read.
std::optional<TableEntry> LookupCacheTable(const uint8_t *table, uint64_t size, uint64_t model_id);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_CACHE_CACHE_TABLE_H_
