// SPDX-License-Identifier: Apache-2.0
// The published cache table: where the tensors of each BlocksCacheKey and of each prefix
// CacheKey's slot live, in a small memfd that linked peers on the same host map read-only. It
// lets a peer resolve a pull_blocks by BlocksCacheKey, or a pull_cache by a prefix key, without a
// round trip to the owner (upstream's remote-cache-accessible reads). Only keys a pull never
// consumes are published: a req key's pull stays two-sided, since the owner consumes it.
//
// The owner changes it entry by entry under a sequence lock (seq is odd while writing): a new
// key is appended, a removed one is overwritten in place with a tombstone, and the live entries
// are rewritten compactly only when the table is full or half of it is tombstones. So
// registering n keyed caches costs O(n) in all, not O(n^2) (a whole rewrite per change made
// 4096 registrations take a second). Readers copy the entry they need and retry when seq moved.
// Readers never trust the contents: every size is bounded by the mapping, and the requester
// checks every offset against the pool it mapped before reading.
#ifndef LLM_DATADIST_CACHE_CACHE_TABLE_H_
#define LLM_DATADIST_CACHE_CACHE_TABLE_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist {

constexpr uint64_t kCacheTableBytes = 4ull << 20;

// Where a published cache's tensors are.
enum class TableLocation : uint8_t { kRegion = 0, kRawHost = 1 };

// What a record is published under. On the wire (WireEntry.key_kind): values fixed.
enum class TableKeyKind : uint8_t { kBlocks = 0, kPrefix = 1 };

struct TableKey {
  TableKeyKind kind = TableKeyKind::kBlocks;
  uint64_t model_id = 0;
  uint64_t prefix_id = 0;  // kPrefix only
  static TableKey Blocks(uint64_t model_id) { return {TableKeyKind::kBlocks, model_id, 0}; }
  static TableKey Prefix(uint64_t prefix_id, uint64_t model_id) { return {TableKeyKind::kPrefix, model_id, prefix_id}; }
  bool operator==(const TableKey &o) const { return kind == o.kind && model_id == o.model_id && prefix_id == o.prefix_id; }
};
struct TableKeyHash {
  size_t operator()(const TableKey &k) const {
    return std::hash<uint64_t>()(k.model_id * 0x9E3779B97F4A7C15ull ^ k.prefix_id) ^ static_cast<size_t>(k.kind);
  }
};

struct TableEntry {
  TableKey key;
  int64_t cache_id = -1;
  uint64_t stride = 0;      // bytes per block (kBlocks) or per slot (kPrefix)
  uint64_t num_blocks = 0;  // shape[0]: blocks or slots
  uint32_t slot = 0;        // kPrefix: the slot the key is bound to
  TableLocation location = TableLocation::kRegion;
  uint8_t region_id = 0;
  std::vector<uint64_t> tensors;  // offset in the region, or raw address, per tensor
};

class CacheTablePublisher {
 public:
  // `capacity` is the table's size in bytes (tests make it small to exercise a full table).
  explicit CacheTablePublisher(uint64_t capacity = kCacheTableBytes) : capacity_(capacity) {}
  ~CacheTablePublisher();
  CacheTablePublisher(const CacheTablePublisher &) = delete;
  CacheTablePublisher &operator=(const CacheTablePublisher &) = delete;

  // Creates the memfd, or empties the table when it exists (a re-initialized engine).
  DetailedStatus Create();
  // Publishes `entry` under entry.key, replacing what was there. An entry that does not fit
  // even after compaction is left out (logged) and retried at the next compaction; its key is
  // then served by the two-sided path.
  void Put(TableEntry entry);
  // Unpublishes `key` (absent: no-op).
  void Remove(const TableKey &key);
  // Unpublishes every key of cache `cache_id` (before its memory may be freed).
  void RemoveCache(int64_t cache_id);
  // Unpublishes everything.
  void Clear();

  int fd() const { return fd_; }
  uint64_t capacity() const { return capacity_; }
  // Entries published in the mapping right now (live ones; tombstones and left-out entries are
  // not counted), and bytes in use including tombstones. For tests and diagnostics.
  size_t published_count() const;
  uint64_t bytes_used() const;

 private:
  struct Slot {
    TableEntry entry;
    std::optional<uint64_t> offset;  // where it is in the mapping; nullopt: did not fit
  };
  // Each *Locked function runs with mutex_ held and inside one seqlock write section.
  bool AppendLocked(Slot &slot);
  void TombstoneLocked(const Slot &slot);
  void CompactLocked();
  void BeginWriteLocked();
  void EndWriteLocked();

  const uint64_t capacity_;
  int fd_ = -1;
  uint8_t *base_ = nullptr;
  mutable std::mutex mutex_;  // one writer at a time: registrations may come from many threads
  std::unordered_map<TableKey, Slot, TableKeyHash> slots_;
  uint64_t used_ = 0;        // header + entries + tombstones
  uint64_t dead_bytes_ = 0;  // tombstones
  uint32_t record_count_ = 0;  // entries + tombstones, as readers walk them
  size_t left_out_ = 0;        // live entries that did not fit
};

// Looks `key` up in a peer's table mapped at `table` (`size` bytes). nullopt when absent, when
// the table is malformed, or when it kept changing while being read.
// `hint` (optional, in/out): where the key's record was last found. Looked at first, so a
// lookup of a key that has not moved costs one record, not a walk of the table; any live
// record with the key is the key's entry (a replaced one is a tombstone), so a stale hint only
// costs the walk that follows.
std::optional<TableEntry> LookupCacheTable(const uint8_t *table, uint64_t size, const TableKey &key,
                                           uint64_t *hint = nullptr);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_CACHE_CACHE_TABLE_H_
