// SPDX-License-Identifier: Apache-2.0
#include "cache/cache_table.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/logging.h"

namespace llm_datadist {

namespace {

constexpr uint32_t kTableMagic = 0x4C4C5442;  // "LLTB"
constexpr uint32_t kTableVersion = 1;
constexpr uint32_t kMaxTensorsPerEntry = 1 << 16;

struct TableHeader {
  uint32_t magic;
  uint32_t version;
  uint64_t seq;  // accessed with __atomic builtins (shared memory)
  uint64_t bytes_used;
  uint32_t entry_count;
  uint32_t reserved;
};

struct WireEntry {
  uint64_t model_id;
  int64_t cache_id;
  uint64_t stride;
  uint64_t num_blocks;
  uint32_t num_tensors;
  uint8_t location;
  uint8_t region_id;
  uint16_t reserved;
};
static_assert(sizeof(WireEntry) == 40, "table entry layout");

}  // namespace

CacheTablePublisher::~CacheTablePublisher() {
  if (base_ != nullptr) munmap(base_, kCacheTableBytes);
  if (fd_ >= 0) close(fd_);
}

DetailedStatus CacheTablePublisher::Create() {
  if (fd_ >= 0) {
    Publish({});  // a re-initialized engine starts with an empty table
    return DetailedStatus::Ok();
  }
  int fd = memfd_create("llmdd-cache-table", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, kCacheTableBytes) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("cannot create the cache table: ", std::strerror(err)));
  }
  void *p = mmap(nullptr, kCacheTableBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("cannot map the cache table: ", std::strerror(err)));
  }
  fd_ = fd;
  base_ = static_cast<uint8_t *>(p);
  auto *header = reinterpret_cast<TableHeader *>(base_);
  header->magic = kTableMagic;
  header->version = kTableVersion;
  __atomic_store_n(&header->seq, 0, __ATOMIC_RELEASE);
  return DetailedStatus::Ok();
}

void CacheTablePublisher::Publish(const std::vector<TableEntry> &entries) {
  if (base_ == nullptr) return;
  auto *header = reinterpret_cast<TableHeader *>(base_);
  const uint64_t seq = __atomic_load_n(&header->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&header->seq, seq + 1, __ATOMIC_RELEASE);  // odd: writing
  std::atomic_thread_fence(std::memory_order_release);
  uint64_t used = sizeof(TableHeader);
  uint32_t count = 0;
  for (const TableEntry &e : entries) {
    const uint64_t need = sizeof(WireEntry) + e.tensors.size() * sizeof(uint64_t);
    if (e.tensors.size() > kMaxTensorsPerEntry || used + need > kCacheTableBytes) {
      LLMDD_LOG(kWarning, "cache table full: BlocksCacheKey(model_id=", e.model_id,
                ") is served without one-sided reads");
      continue;
    }
    WireEntry w{e.model_id, e.cache_id, e.stride, e.num_blocks, static_cast<uint32_t>(e.tensors.size()),
                static_cast<uint8_t>(e.location), e.region_id, 0};
    std::memcpy(base_ + used, &w, sizeof(w));
    if (!e.tensors.empty()) std::memcpy(base_ + used + sizeof(w), e.tensors.data(), e.tensors.size() * sizeof(uint64_t));
    used += need;
    ++count;
  }
  header->bytes_used = used;
  header->entry_count = count;
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&header->seq, seq + 2, __ATOMIC_RELEASE);  // even: stable
}

std::optional<TableEntry> LookupCacheTable(const uint8_t *table, uint64_t size, uint64_t model_id) {
  if (table == nullptr || size < sizeof(TableHeader)) return std::nullopt;
  const auto *header = reinterpret_cast<const TableHeader *>(table);
  if (header->magic != kTableMagic || header->version != kTableVersion) return std::nullopt;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint64_t seq1 = __atomic_load_n(&header->seq, __ATOMIC_ACQUIRE);
    if (seq1 & 1) continue;
    const uint64_t used = std::min<uint64_t>(header->bytes_used, size);
    const uint32_t count = header->entry_count;
    std::optional<TableEntry> found;
    uint64_t pos = sizeof(TableHeader);
    for (uint32_t i = 0; i < count && pos + sizeof(WireEntry) <= used; ++i) {
      WireEntry w;
      std::memcpy(&w, table + pos, sizeof(w));
      const uint64_t tensors_bytes = uint64_t{w.num_tensors} * sizeof(uint64_t);
      if (w.num_tensors > kMaxTensorsPerEntry || pos + sizeof(w) + tensors_bytes > used) break;
      if (w.model_id == model_id && w.location <= 1) {
        TableEntry e;
        e.model_id = w.model_id;
        e.cache_id = w.cache_id;
        e.stride = w.stride;
        e.num_blocks = w.num_blocks;
        e.location = static_cast<TableLocation>(w.location);
        e.region_id = w.region_id;
        e.tensors.resize(w.num_tensors);
        if (w.num_tensors) std::memcpy(e.tensors.data(), table + pos + sizeof(w), tensors_bytes);
        found = std::move(e);
        break;
      }
      pos += sizeof(w) + tensors_bytes;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (__atomic_load_n(&header->seq, __ATOMIC_ACQUIRE) == seq1) return found;
  }
  return std::nullopt;
}

}  // namespace llm_datadist
