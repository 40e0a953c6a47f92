// SPDX-License-Identifier: Apache-2.0
// A memory pool: one region (host memfd, CPU device, or one CUDA allocation) carved into
// page-granular allocations (PageAllocator). Allocations are RAII handles: the range returns to
// the pool when the last handle goes, so a zero-copy view or an in-flight copy that holds one
// can never see its memory reused. The pool itself lives until its last allocation is gone.
//
// Thread-safety: every method may be called from any thread.
#ifndef LLM_DATADIST_MEMORY_MEMORY_POOL_H_
#define LLM_DATADIST_MEMORY_MEMORY_POOL_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "llm_datadist/status.h"
#include "memory/page_allocator.h"

namespace llm_datadist {

// Where bytes live. kCpuDevice is Placement::DEVICE on a host without CUDA (or with the CPU
// device backend chosen): host memory that plays the device's part.
enum class MemoryKind : uint8_t { kHost, kCpuDevice, kCudaDevice };

const char *MemoryKindName(MemoryKind kind);
inline bool IsHostAddressable(MemoryKind kind) { return kind != MemoryKind::kCudaDevice; }

struct PoolConfig {
  uint64_t memory_size = 0;
  uint32_t page_shift = 16;
};

constexpr uint32_t kMinPageShift = 10;
constexpr uint32_t kMaxPageShift = 30;

// Parses and checks a mem_pool_cfg / host_mem_pool_cfg JSON value; `option` names the option
// in error messages. LLM_PARAM_INVALID on malformed JSON, a missing or non-positive
// memory_size, page_shift outside [10, 30], memory_size smaller than one page, or more than
// 2^32-1 pages.
DetailedStatus ParsePoolConfig(const std::string &json, const std::string &option, PoolConfig *out);

struct PoolStats {
  uint64_t capacity = 0;
  uint64_t page_size = 0;
  uint64_t used_bytes = 0;
  uint64_t free_bytes = 0;
  uint64_t allocation_count = 0;
  uint64_t free_range_count = 0;
  uint64_t largest_free_range = 0;
};

class MemoryPool;

class PoolAllocation {
 public:
  PoolAllocation(std::shared_ptr<MemoryPool> pool, uint64_t offset, uint64_t bytes);
  ~PoolAllocation();
  PoolAllocation(const PoolAllocation &) = delete;
  PoolAllocation &operator=(const PoolAllocation &) = delete;

  uint8_t *data() const;
  uint64_t bytes() const { return bytes_; }
  uint64_t offset() const { return offset_; }
  const MemoryPool &pool() const { return *pool_; }

 private:
  std::shared_ptr<MemoryPool> pool_;
  uint64_t offset_;
  uint64_t bytes_;
};

class MemoryPool : public std::enable_shared_from_this<MemoryPool> {
 public:
  // Creates the region. Host and CPU-device pools are a memfd mapping (shareable with another
  // process); a CUDA pool is one device allocation on `device_ordinal`. Failure:
  // LLM_OUT_OF_MEMORY (host) or LLM_DEVICE_OUT_OF_MEMORY (device), naming the size.
  static DetailedStatus Create(MemoryKind kind, const PoolConfig &config, int device_ordinal,
                               std::shared_ptr<MemoryPool> *out);
  ~MemoryPool();
  MemoryPool(const MemoryPool &) = delete;
  MemoryPool &operator=(const MemoryPool &) = delete;

  // LLM_OUT_OF_MEMORY when no free range fits `bytes` (the message gives free and largest).
  DetailedStatus Allocate(uint64_t bytes, std::shared_ptr<PoolAllocation> *out);

  MemoryKind kind() const { return kind_; }
  uint8_t *base() const { return base_; }
  uint64_t size() const { return size_; }
  int fd() const { return fd_; }
  int device_ordinal() const { return device_ordinal_; }
  PoolStats Stats() const;

 private:
  friend class PoolAllocation;
  MemoryPool(MemoryKind kind, int device_ordinal, const PoolConfig &config);
  void Release(uint64_t offset);

  MemoryKind kind_;
  int device_ordinal_;
  uint8_t *base_ = nullptr;
  uint64_t size_ = 0;
  int fd_ = -1;
  mutable std::mutex mutex_;
  PageAllocator allocator_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_MEMORY_MEMORY_POOL_H_
