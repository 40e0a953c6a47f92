// SPDX-License-Identifier: Apache-2.0
#include "memory/page_allocator.h"

namespace llm_datadist {

PageAllocator::PageAllocator(uint64_t capacity, uint32_t page_shift)
    : capacity_((capacity >> page_shift) << page_shift), page_shift_(page_shift) {
  if (capacity_ > 0) InsertFree(0, capacity_);
}

void PageAllocator::InsertFree(uint64_t offset, uint64_t length) {
  free_by_offset_.emplace(offset, length);
  free_by_size_.emplace(length, offset);
}

void PageAllocator::EraseFree(std::map<uint64_t, uint64_t>::iterator it) {
  free_by_size_.erase({it->second, it->first});
  free_by_offset_.erase(it);
}

std::optional<uint64_t> PageAllocator::Allocate(uint64_t bytes) {
  if (bytes == 0 || bytes > capacity_) return std::nullopt;
  const uint64_t page = page_size();
  const uint64_t length = (bytes + page - 1) & ~(page - 1);
  // Best fit: the smallest free range that holds `length`, lowest offset among equals.
  auto fit = free_by_size_.lower_bound({length, 0});
  if (fit == free_by_size_.end()) return std::nullopt;
  const uint64_t range_length = fit->first;
  const uint64_t offset = fit->second;
  EraseFree(free_by_offset_.find(offset));
  if (range_length > length) InsertFree(offset + length, range_length - length);
  allocations_.emplace(offset, length);
  used_bytes_ += length;
  return offset;
}

bool PageAllocator::Free(uint64_t offset) {
  auto alloc = allocations_.find(offset);
  if (alloc == allocations_.end()) return false;
  uint64_t start = offset;
  uint64_t length = alloc->second;
  used_bytes_ -= length;
  allocations_.erase(alloc);

  // Merge with the free range that ends exactly at `start`, and the one that begins at the end.
  auto next = free_by_offset_.lower_bound(start);
  if (next != free_by_offset_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      length += prev->second;
      EraseFree(prev);
    }
  }
  next = free_by_offset_.lower_bound(start + length);
  if (next != free_by_offset_.end() && next->first == start + length) {
    length += next->second;
    EraseFree(next);
  }
  InsertFree(start, length);
  return true;
}

uint64_t PageAllocator::AllocationSize(uint64_t offset) const {
  auto it = allocations_.find(offset);
  return it == allocations_.end() ? 0 : it->second;
}

uint64_t PageAllocator::largest_free_range() const {
  return free_by_size_.empty() ? 0 : free_by_size_.rbegin()->first;
}

}  // namespace llm_datadist
