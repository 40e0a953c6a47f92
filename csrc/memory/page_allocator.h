// SPDX-License-Identifier: Apache-2.0
// Page-granular best-fit allocator over the offsets [0, capacity) of one memory region.
//
// Free ranges are indexed twice: by offset (to coalesce a freed range with its neighbours) and
// by (length, offset) (to find the smallest range that fits). Both are balanced trees, so
// Allocate and Free cost O(log F) for F free ranges; allocations are found in a hash map.
// Freed ranges merge with adjacent free ranges immediately, so after everything is freed the
// region is one free range again.
//
// Not thread-safe: MemoryPool serializes calls.
#ifndef LLM_DATADIST_MEMORY_PAGE_ALLOCATOR_H_
#define LLM_DATADIST_MEMORY_PAGE_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>
#include <utility>

namespace llm_datadist {

class PageAllocator {
 public:
  // `capacity` is rounded down to whole pages of 2^page_shift bytes.
  PageAllocator(uint64_t capacity, uint32_t page_shift);

  // Offset of a new range of at least `bytes` (rounded up to whole pages), or nullopt when
  // `bytes` is 0 or no free range is large enough.
  std::optional<uint64_t> Allocate(uint64_t bytes);
  // Frees the range that starts at `offset`. Returns false, changing nothing, when no
  // allocation starts there (a double free or a foreign offset).
  bool Free(uint64_t offset);

  // Bytes of the allocation starting at `offset` (page-rounded), 0 when there is none.
  uint64_t AllocationSize(uint64_t offset) const;

  uint64_t capacity() const { return capacity_; }
  uint64_t page_size() const { return uint64_t{1} << page_shift_; }
  uint64_t used_bytes() const { return used_bytes_; }
  uint64_t free_bytes() const { return capacity_ - used_bytes_; }
  size_t allocation_count() const { return allocations_.size(); }
  size_t free_range_count() const { return free_by_offset_.size(); }
  uint64_t largest_free_range() const;

 private:
  void InsertFree(uint64_t offset, uint64_t length);
  void EraseFree(std::map<uint64_t, uint64_t>::iterator it);

  uint64_t capacity_;
  uint32_t page_shift_;
  uint64_t used_bytes_ = 0;
  std::map<uint64_t, uint64_t> free_by_offset_;          // offset -> length
  std::set<std::pair<uint64_t, uint64_t>> free_by_size_;  // (length, offset)
  std::unordered_map<uint64_t, uint64_t> allocations_;    // offset -> length
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_MEMORY_PAGE_ALLOCATOR_H_
