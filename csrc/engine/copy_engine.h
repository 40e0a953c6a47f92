// SPDX-License-Identifier: Apache-2.0
// Moves bytes between memory of any kind in this process: host/CPU-device with memcpy (split
// over threads for large batches), anything touching CUDA memory with one batched device copy.
#ifndef LLM_DATADIST_ENGINE_COPY_ENGINE_H_
#define LLM_DATADIST_ENGINE_COPY_ENGINE_H_

#include <cstdint>
#include <vector>

#include "llm_datadist/status.h"
#include "memory/memory_pool.h"

namespace llm_datadist {

struct CopyRegion {
  void *dst;
  const void *src;
  uint64_t bytes;
};

// Adjacent regions (both src and dst contiguous) are merged before copying.
std::vector<CopyRegion> CoalesceRegions(const std::vector<CopyRegion> &regions);

// Copies every region. `dst_kind` / `src_kind` say where the memory is; a failed CUDA copy
// returns the mapped CUDA error (with context) and LLM_COPY... never a partial success claim.
DetailedStatus CopyRegions(const std::vector<CopyRegion> &regions, MemoryKind dst_kind, MemoryKind src_kind);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_ENGINE_COPY_ENGINE_H_
