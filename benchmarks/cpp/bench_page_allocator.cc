// SPDX-License-Identifier: Apache-2.0
// How PageAllocator's cost grows with the number of free ranges F. For each F, the region is
// fragmented into F one-page holes (allocate 2F pages, free every other one), then timed:
//   fit:  Allocate(1 page) + Free  -> best-fit lookup among F equal holes, split-free, re-merge
//   miss: Allocate(2 pages) + Free -> no hole fits; served from the tail range
// Prints one JSON object per F. Balanced trees make both O(log F): a 10x larger F should add a
// roughly constant number of nanoseconds, not multiply them.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "memory/page_allocator.h"

using llm_datadist::PageAllocator;

int main(int argc, char **argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 1000000;
  const uint32_t shift = 12;
  for (uint64_t holes : {uint64_t{10}, uint64_t{100}, uint64_t{1000}, uint64_t{10000}, uint64_t{100000},
                         uint64_t{1000000}}) {
    PageAllocator alloc((2 * holes + 1024) << shift, shift);
    std::vector<uint64_t> offsets;
    offsets.reserve(2 * holes);
    for (uint64_t i = 0; i < 2 * holes; ++i) offsets.push_back(*alloc.Allocate(1 << shift));
    for (uint64_t i = 0; i < 2 * holes; i += 2) alloc.Free(offsets[i]);
    const size_t free_ranges = alloc.free_range_count();
    double results[2];
    for (int mode = 0; mode < 2; ++mode) {
      const uint64_t bytes = (mode == 0 ? 1 : 2) << shift;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iterations; ++i) {
        auto off = alloc.Allocate(bytes);
        alloc.Free(*off);
      }
      auto dt = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
      results[mode] = dt / iterations;
    }
    std::printf("{\"free_ranges\": %zu, \"fit_ns_per_alloc_free\": %.1f, \"miss_ns_per_alloc_free\": %.1f}\n",
                free_ranges, results[0], results[1]);
    std::fflush(stdout);
  }
  return 0;
}
