// SPDX-License-Identifier: Apache-2.0
#include "cache/cache_table.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/logging.h"
#include "common/sealed_memfd.h"

namespace llm_datadist {

namespace {

constexpr uint32_t kTableMagic = 0x4C4C5442;  // "LLTB"
// 2: records carry a key kind, a prefix id and a slot (prefix CacheKeys). A peer reading
// another version finds nothing and pulls two-sided.
constexpr uint32_t kTableVersion = 2;
constexpr uint32_t kMaxTensorsPerEntry = 1 << 16;
// WireEntry.location of a removed entry. Readers accept only TableLocation values (<= 1).
constexpr uint8_t kTombstone = 0xFF;

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
  uint64_t prefix_id;
  int64_t cache_id;
  uint64_t stride;
  uint64_t num_blocks;
  uint32_t num_tensors;
  uint32_t slot;
  uint8_t location;
  uint8_t region_id;
  uint8_t key_kind;
  uint8_t reserved[5];
};
static_assert(sizeof(WireEntry) == 56, "table entry layout");

// The entry of the record at `pos`, when it is a live record of `key` that fits in `used`.
std::optional<TableEntry> RecordAt(const uint8_t *table, uint64_t used, uint64_t pos, const TableKey &key,
                                   uint64_t *next) {
  WireEntry w;
  std::memcpy(&w, table + pos, sizeof(w));
  const uint64_t tensors_bytes = uint64_t{w.num_tensors} * sizeof(uint64_t);
  if (w.num_tensors > kMaxTensorsPerEntry || pos + sizeof(w) + tensors_bytes > used) {
    *next = used;  // malformed: nothing after it can be walked
    return std::nullopt;
  }
  *next = pos + sizeof(w) + tensors_bytes;
  if (w.location > 1 || w.model_id != key.model_id || w.key_kind != static_cast<uint8_t>(key.kind) ||
      (key.kind == TableKeyKind::kPrefix && w.prefix_id != key.prefix_id))
    return std::nullopt;
  TableEntry e;
  e.key = key;
  e.cache_id = w.cache_id;
  e.stride = w.stride;
  e.num_blocks = w.num_blocks;
  e.slot = w.slot;
  e.location = static_cast<TableLocation>(w.location);
  e.region_id = w.region_id;
  e.tensors.resize(w.num_tensors);
  if (w.num_tensors) std::memcpy(e.tensors.data(), table + pos + sizeof(w), tensors_bytes);
  return e;
}

}  // namespace

CacheTablePublisher::~CacheTablePublisher() {
  if (base_ != nullptr) munmap(base_, capacity_);
  if (fd_ >= 0) close(fd_);
}

DetailedStatus CacheTablePublisher::Create() {
  if (fd_ >= 0) {
    Clear();  // a re-initialized engine starts with an empty table
    return DetailedStatus::Ok();
  }
  int fd = -1;
  LLMDD_RETURN_IF_ERROR(CreateSealedMemfd("llmdd-cache-table", capacity_, &fd));
  void *p = mmap(nullptr, capacity_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    close(fd);
    return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("cannot map the cache table: ", std::strerror(err)));
  }
  std::lock_guard<std::mutex> lock(mutex_);
  fd_ = fd;
  base_ = static_cast<uint8_t *>(p);
  auto *header = reinterpret_cast<TableHeader *>(base_);
  header->magic = kTableMagic;
  header->version = kTableVersion;
  header->bytes_used = sizeof(TableHeader);
  header->entry_count = 0;
  used_ = sizeof(TableHeader);
  __atomic_store_n(&header->seq, 0, __ATOMIC_RELEASE);
  return DetailedStatus::Ok();
}

void CacheTablePublisher::BeginWriteLocked() {
  auto *header = reinterpret_cast<TableHeader *>(base_);
  const uint64_t seq = __atomic_load_n(&header->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&header->seq, seq + 1, __ATOMIC_RELEASE);  // odd: writing
  std::atomic_thread_fence(std::memory_order_release);
}

void CacheTablePublisher::EndWriteLocked() {
  auto *header = reinterpret_cast<TableHeader *>(base_);
  header->bytes_used = used_;
  header->entry_count = record_count_;
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t seq = __atomic_load_n(&header->seq, __ATOMIC_RELAXED);
  __atomic_store_n(&header->seq, seq + 1, __ATOMIC_RELEASE);  // even: stable
}

static uint64_t RecordBytes(const TableEntry &e) { return sizeof(WireEntry) + e.tensors.size() * sizeof(uint64_t); }

bool CacheTablePublisher::AppendLocked(Slot &slot) {
  const TableEntry &e = slot.entry;
  const uint64_t need = RecordBytes(e);
  if (e.tensors.size() > kMaxTensorsPerEntry || used_ + need > capacity_) return false;
  WireEntry w{};
  w.model_id = e.key.model_id;
  w.prefix_id = e.key.kind == TableKeyKind::kPrefix ? e.key.prefix_id : 0;
  w.cache_id = e.cache_id;
  w.stride = e.stride;
  w.num_blocks = e.num_blocks;
  w.num_tensors = static_cast<uint32_t>(e.tensors.size());
  w.slot = e.slot;
  w.location = static_cast<uint8_t>(e.location);
  w.region_id = e.region_id;
  w.key_kind = static_cast<uint8_t>(e.key.kind);
  std::memcpy(base_ + used_, &w, sizeof(w));
  if (!e.tensors.empty()) std::memcpy(base_ + used_ + sizeof(w), e.tensors.data(), e.tensors.size() * sizeof(uint64_t));
  slot.offset = used_;
  used_ += need;
  ++record_count_;
  return true;
}

void CacheTablePublisher::TombstoneLocked(const Slot &slot) {
  if (!slot.offset) return;
  base_[*slot.offset + offsetof(WireEntry, location)] = kTombstone;  // readers skip it, sizes stay walkable
  dead_bytes_ += RecordBytes(slot.entry);
}

void CacheTablePublisher::CompactLocked() {
  used_ = sizeof(TableHeader);
  dead_bytes_ = 0;
  record_count_ = 0;
  left_out_ = 0;
  for (auto &kv : slots_) {
    kv.second.offset.reset();
    if (!AppendLocked(kv.second)) {
      ++left_out_;
      LLMDD_LOG(kWarning, "cache table full: ", kv.first.kind == TableKeyKind::kPrefix ? "prefix CacheKey(prefix_id=" : "BlocksCacheKey(",
                kv.first.kind == TableKeyKind::kPrefix ? std::to_string(kv.first.prefix_id) + ", " : std::string(),
                "model_id=", kv.first.model_id, ") is served without one-sided reads");
    }
  }
}

void CacheTablePublisher::Put(TableEntry entry) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (base_ == nullptr) return;
  const TableKey key = entry.key;
  BeginWriteLocked();
  auto it = slots_.find(key);
  if (it != slots_.end()) {
    if (!it->second.offset) --left_out_;
    TombstoneLocked(it->second);
    it->second = Slot{std::move(entry), std::nullopt};
  } else {
    it = slots_.emplace(key, Slot{std::move(entry), std::nullopt}).first;
  }
  if (!AppendLocked(it->second)) {
    CompactLocked();  // places every live entry, this one included, as far as they fit
  }
  EndWriteLocked();
}

void CacheTablePublisher::Remove(const TableKey &key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = slots_.find(key);
  if (base_ == nullptr || it == slots_.end()) return;
  BeginWriteLocked();
  if (!it->second.offset) --left_out_;
  TombstoneLocked(it->second);
  slots_.erase(it);
  // Compact when tombstones are half the table (lookups walk them), or when an entry that did
  // not fit may fit now.
  if (slots_.empty() || 2 * dead_bytes_ > used_ || left_out_ > 0) {
    CompactLocked();
  }
  EndWriteLocked();
}

void CacheTablePublisher::RemoveCache(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (base_ == nullptr) return;
  bool removed = false;
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (it->second.entry.cache_id != cache_id) {
      ++it;
      continue;
    }
    if (!removed) BeginWriteLocked();
    removed = true;
    if (!it->second.offset) --left_out_;
    TombstoneLocked(it->second);
    it = slots_.erase(it);
  }
  if (!removed) return;
  if (slots_.empty() || 2 * dead_bytes_ > used_ || left_out_ > 0) CompactLocked();
  EndWriteLocked();
}

void CacheTablePublisher::Clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  slots_.clear();
  if (base_ == nullptr) return;
  BeginWriteLocked();
  CompactLocked();
  EndWriteLocked();
}

size_t CacheTablePublisher::published_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  size_t n = 0;
  for (const auto &kv : slots_) n += kv.second.offset ? 1 : 0;
  return n;
}

uint64_t CacheTablePublisher::bytes_used() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_;
}

std::optional<TableEntry> LookupCacheTable(const uint8_t *table, uint64_t size, const TableKey &key, uint64_t *hint) {
  if (table == nullptr || size < sizeof(TableHeader)) return std::nullopt;
  const auto *header = reinterpret_cast<const TableHeader *>(table);
  if (header->magic != kTableMagic || header->version != kTableVersion) return std::nullopt;
  for (int attempt = 0; attempt < 64; ++attempt) {
    const uint64_t seq1 = __atomic_load_n(&header->seq, __ATOMIC_ACQUIRE);
    if (seq1 & 1) continue;
    const uint64_t used = std::min<uint64_t>(header->bytes_used, size);
    const uint32_t count = header->entry_count;
    std::optional<TableEntry> found;
    uint64_t found_at = 0;
    uint64_t next = 0;
    // The hint first: a record boundary as of some earlier lookup, and any live record of the
    // key is its entry. Inside a record since (after a compaction), it matches nothing.
    if (hint != nullptr && *hint >= sizeof(TableHeader) && *hint % 8 == 0 && *hint + sizeof(WireEntry) <= used) {
      found = RecordAt(table, used, *hint, key, &next);
      found_at = *hint;
    }
    uint64_t pos = sizeof(TableHeader);
    for (uint32_t i = 0; !found && i < count && pos + sizeof(WireEntry) <= used; ++i, pos = next) {
      found = RecordAt(table, used, pos, key, &next);
      found_at = pos;
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (__atomic_load_n(&header->seq, __ATOMIC_ACQUIRE) == seq1) {
      if (found && hint != nullptr) *hint = found_at;
      return found;
    }
  }
  return std::nullopt;
}

}  // namespace llm_datadist
