// SPDX-License-Identifier: Apache-2.0
#include "memory/memory_pool.h"

#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older headers lack it, older kernels answer EINVAL
#endif
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/cuda_driver.h"
#include "common/flat_json.h"
#include "common/logging.h"
#include "common/sealed_memfd.h"

namespace llm_datadist {

const char *MemoryKindName(MemoryKind kind) {
  switch (kind) {
    case MemoryKind::kHost: return "host";
    case MemoryKind::kCpuDevice: return "cpu_device";
    case MemoryKind::kCudaDevice: return "cuda_device";
  }
  return "unknown";
}

DetailedStatus ParsePoolConfig(const std::string &json, const std::string &option, PoolConfig *out) {
  std::map<std::string, FlatJsonValue> fields;
  std::string error;
  LLMDD_CHECK(ParseFlatJsonObject(json, &fields, &error), LLM_PARAM_INVALID, option,
              " is not a valid JSON object (", error, "): ", json);
  PoolConfig config;
  auto size_it = fields.find("memory_size");
  LLMDD_CHECK(size_it != fields.end(), LLM_PARAM_INVALID, option,
              " needs \"memory_size\" (bytes): ", json);
  const FlatJsonValue &size = size_it->second;
  LLMDD_CHECK(size.kind == FlatJsonValue::Kind::kInteger && !size.negative && size.magnitude > 0,
              LLM_PARAM_INVALID, option, " memory_size must be a positive integer, got ",
              size.negative ? "-" : "", size.kind == FlatJsonValue::Kind::kInteger
                  ? std::to_string(size.magnitude) : size.text);
  config.memory_size = size.magnitude;
  auto shift_it = fields.find("page_shift");
  if (shift_it != fields.end()) {
    const FlatJsonValue &shift = shift_it->second;
    LLMDD_CHECK(shift.kind == FlatJsonValue::Kind::kInteger && !shift.negative &&
                    shift.magnitude >= kMinPageShift && shift.magnitude <= kMaxPageShift,
                LLM_PARAM_INVALID, option, " page_shift must be an integer in [", kMinPageShift,
                ", ", kMaxPageShift, "], got ", shift.negative ? "-" : "",
                shift.kind == FlatJsonValue::Kind::kInteger ? std::to_string(shift.magnitude)
                                                            : shift.text);
    config.page_shift = static_cast<uint32_t>(shift.magnitude);
  }
  for (const auto &field : fields) {
    if (field.first != "memory_size" && field.first != "page_shift")
      LLMDD_LOG(kWarning, option, ": ignoring unknown key \"", field.first, "\"");
  }
  const uint64_t page = uint64_t{1} << config.page_shift;
  LLMDD_CHECK(config.memory_size >= page, LLM_PARAM_INVALID, option, " memory_size ",
              config.memory_size, " is smaller than one page (", page, " bytes, page_shift ",
              config.page_shift, ")");
  LLMDD_CHECK((config.memory_size >> config.page_shift) < UINT32_MAX, LLM_PARAM_INVALID, option,
              " memory_size ", config.memory_size, " has too many pages for page_shift ",
              config.page_shift, "; raise page_shift");
  *out = config;
  return DetailedStatus::Ok();
}

PoolAllocation::PoolAllocation(std::shared_ptr<MemoryPool> pool, uint64_t offset, uint64_t bytes)
    : pool_(std::move(pool)), offset_(offset), bytes_(bytes) {}

PoolAllocation::~PoolAllocation() { pool_->Release(offset_); }

uint8_t *PoolAllocation::data() const { return pool_->base() + offset_; }

MemoryPool::MemoryPool(MemoryKind kind, int device_ordinal, const PoolConfig &config)
    : kind_(kind), device_ordinal_(device_ordinal), allocator_(config.memory_size, config.page_shift) {}

DetailedStatus MemoryPool::Create(MemoryKind kind, const PoolConfig &config, int device_ordinal,
                                  std::shared_ptr<MemoryPool> *out) {
  std::shared_ptr<MemoryPool> pool(new MemoryPool(kind, device_ordinal, config));
  pool->size_ = pool->allocator_.capacity();
  if (kind == MemoryKind::kCudaDevice) {
    cuda::CUdeviceptr ptr = 0;
    DetailedStatus status = cuda::DeviceAlloc(device_ordinal, pool->size_, &ptr);
    if (!status.ok()) {
      return DetailedStatus(LLM_DEVICE_OUT_OF_MEMORY,
                            detail::Concat("cannot allocate a device pool of ", pool->size_,
                                           " bytes on CUDA device ", device_ordinal, ": ",
                                           status.message()))
          .With("operation", "create_device_pool");
    }
    pool->base_ = reinterpret_cast<uint8_t *>(static_cast<uintptr_t>(ptr));
  } else {
    // A memfd so that another process on this host can map the pool (shm transport). Nothing is
    // committed until a cache is allocated (Allocate backs its pages), so a large pool costs
    // nothing until used.
    const char *name = kind == MemoryKind::kHost ? "llmdd-host-pool" : "llmdd-cpu-device-pool";
    int fd = -1;
    DetailedStatus created = CreateSealedMemfd(name, pool->size_, &fd);
    if (!created.ok()) return created.With("operation", "create_pool");
    void *base = mmap(nullptr, pool->size_, PROT_READ | PROT_WRITE,
                      fd >= 0 ? MAP_SHARED : (MAP_PRIVATE | MAP_ANONYMOUS), fd, 0);
    if (base == MAP_FAILED) {
      int err = errno;
      if (fd >= 0) close(fd);
      return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("cannot map a ", MemoryKindName(kind),
                                                              " pool of ", pool->size_, " bytes: ",
                                                              std::strerror(err)));
    }
    pool->fd_ = fd;
    pool->base_ = static_cast<uint8_t *>(base);
  }
  LLMDD_LOG(kInfo, "created ", MemoryKindName(kind), " pool of ", pool->size_, " bytes, page ",
            pool->allocator_.page_size(), " bytes");
  *out = std::move(pool);
  return DetailedStatus::Ok();
}

MemoryPool::~MemoryPool() {
  if (base_ == nullptr) return;
  if (kind_ == MemoryKind::kCudaDevice) {
    DetailedStatus status =
        cuda::DeviceFree(device_ordinal_, static_cast<cuda::CUdeviceptr>(reinterpret_cast<uintptr_t>(base_)));
    if (!status.ok()) LLMDD_LOG(kWarning, "freeing the device pool: ", status.ToString());
  } else {
    munmap(base_, size_);
    if (fd_ >= 0) close(fd_);
  }
}

DetailedStatus MemoryPool::Allocate(uint64_t bytes, std::shared_ptr<PoolAllocation> *out) {
  LLMDD_CHECK(bytes > 0, LLM_PARAM_INVALID, "cannot allocate 0 bytes");
  std::optional<uint64_t> offset;
  uint64_t rounded = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    offset = allocator_.Allocate(bytes);
    if (!offset) {
      return DetailedStatus(LLM_OUT_OF_MEMORY,
                            detail::Concat("the ", MemoryKindName(kind_), " pool cannot fit ", bytes,
                                           " bytes: ", allocator_.free_bytes(), " of ",
                                           allocator_.capacity(), " bytes free, largest free range ",
                                           allocator_.largest_free_range()))
          .With("requested_bytes", bytes);
    }
    rounded = allocator_.AllocationSize(*offset);
  }
  auto allocation = std::make_shared<PoolAllocation>(shared_from_this(), *offset, rounded);
  if (kind_ != MemoryKind::kCudaDevice) {
    // Back the allocation now, as a device allocation is: a pull into a block of a fresh cache
    // then pays no page fault (about 4 us per 4 KiB page, which doubled a small pull's time), and
    // memory that cannot be committed fails here as LLM_OUT_OF_MEMORY instead of a SIGBUS at
    // first touch. MADV_POPULATE_WRITE (Linux 5.14) leaves the contents as they are; an older
    // kernel (EINVAL) keeps faulting pages in on first touch.
    int rc = 0;
    do {
      rc = madvise(base_ + *offset, rounded, MADV_POPULATE_WRITE);
    } while (rc != 0 && (errno == EINTR || errno == EAGAIN));
    if (rc != 0 && errno == ENOMEM) {
      return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("the ", MemoryKindName(kind_), " pool cannot commit ",
                                                              rounded, " bytes of memory for an allocation"))
          .With("requested_bytes", bytes);
    }
  }
  *out = std::move(allocation);
  return DetailedStatus::Ok();
}

void MemoryPool::Release(uint64_t offset) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!allocator_.Free(offset)) LLMDD_LOG(kError, "internal: pool release of unknown offset ", offset);
}

PoolStats MemoryPool::Stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  PoolStats stats;
  stats.capacity = allocator_.capacity();
  stats.page_size = allocator_.page_size();
  stats.used_bytes = allocator_.used_bytes();
  stats.free_bytes = allocator_.free_bytes();
  stats.allocation_count = allocator_.allocation_count();
  stats.free_range_count = allocator_.free_range_count();
  stats.largest_free_range = allocator_.largest_free_range();
  return stats;
}

}  // namespace llm_datadist
