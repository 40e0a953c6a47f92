// SPDX-License-Identifier: Apache-2.0
// Caches and the keys that name them, with upstream LLM-DataDist's lifetime rules:
//  - an allocated cache is referenced by its cache id and by each CacheKey bound to one of its
//    batch slots; its memory is released when deallocate dropped the id reference AND no key
//    remains (a req key is consumed by a complete pull; prefix keys stay until removed);
//  - a blocks cache may be named by one BlocksCacheKey (cluster, model id);
//  - registered (user) memory is never freed here; its keys live until unregister.
// Memory is held by shared_ptr<CacheEntry>: a copy or a zero-copy view that holds the entry
// keeps the bytes valid even if the cache is deallocated meanwhile.
//
// Thread-safety: all methods lock an internal mutex.
#ifndef LLM_DATADIST_CACHE_CACHE_REGISTRY_H_
#define LLM_DATADIST_CACHE_CACHE_REGISTRY_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <tuple>
#include <vector>

#include "llm_datadist/status.h"
#include "llm_datadist/types.h"
#include "memory/memory_pool.h"

namespace llm_datadist {

// Upstream's "not set" value for req_id / prefix_id (2^64 - 1).
constexpr uint64_t kInvalidId = UINT64_MAX;

struct CacheKeySpec {
  uint64_t cluster_id = 0;
  uint64_t req_id = kInvalidId;
  uint64_t model_id = 0;
  uint64_t prefix_id = kInvalidId;

  bool is_padding() const { return req_id == kInvalidId && prefix_id == kInvalidId; }
  bool is_prefix() const { return prefix_id != kInvalidId; }
};

struct BlocksKeySpec {
  uint64_t cluster_id = 0;
  uint64_t model_id = 0;
};

struct CacheEntry {
  int64_t cache_id = -1;
  CacheDesc desc;
  bool is_blocks = false;
  bool is_registered = false;
  // Upstream C++ caches (AllocateCache / RegisterKvCache) are "MIX": usable both as a
  // contiguous cache (shape[0] slots) and as a blocks cache (shape[0] blocks).
  bool mixed = false;
  MemoryKind memory_kind = MemoryKind::kHost;
  int device_ordinal = -1;
  uint64_t tensor_bytes = 0;
  // Bytes of one batch slot (contiguous cache) or one block (blocks cache): tensor / shape[0].
  uint64_t stride = 0;
  std::vector<uintptr_t> tensor_addrs;
  // Pool memory of an allocated cache (empty when registered). Released with the entry.
  std::vector<std::shared_ptr<PoolAllocation>> allocations;
};

// A key as bound locally: the cluster id of a key is ignored locally (it names the owner when
// pulling), so (namespace, id, model id) identifies it.
struct BoundKey {
  bool prefix = false;
  uint64_t id = kInvalidId;
  uint64_t model_id = 0;
  bool operator<(const BoundKey &o) const {
    return std::tie(prefix, id, model_id) < std::tie(o.prefix, o.id, o.model_id);
  }
};

struct KeySlot {
  int64_t cache_id = -1;
  uint32_t batch_index = 0;
};

class CacheRegistry {
 public:
  int64_t NextCacheId();

  // Checks that `keys` can be bound to a new cache of `batch_size` slots: at most batch_size
  // keys, each well-formed, none bound already and no duplicates among them. Padding keys
  // (req_id and prefix_id both unset) reserve a slot without binding.
  DetailedStatus CheckKeys(const std::vector<CacheKeySpec> &keys, uint64_t batch_size) const;
  DetailedStatus CheckBlocksKey(const std::optional<BlocksKeySpec> &key) const;

  // Adds a cache and binds its keys (CheckKeys/CheckBlocksKey must have passed; Add re-checks
  // under the lock so concurrent adds cannot bind the same key twice).
  DetailedStatus Add(std::shared_ptr<CacheEntry> entry, const std::vector<CacheKeySpec> &keys,
                     const std::optional<BlocksKeySpec> &blocks_key);

  std::shared_ptr<CacheEntry> Find(int64_t cache_id) const;
  // The slot a key is bound to, if any.
  std::optional<KeySlot> FindKey(const CacheKeySpec &key) const;
  std::optional<int64_t> FindBlocksKey(uint64_t model_id) const;
  // The model id of the BlocksCacheKey bound to `cache_id`, if any.
  std::optional<uint64_t> BlocksKeyOf(int64_t cache_id) const;
  // The cache tensor whose memory holds [addr, addr + bytes), and the offset of addr in it:
  // how an owner finds the destination of a push named by address. A scan of every tensor.
  struct AddressHit {
    std::shared_ptr<CacheEntry> entry;
    uint32_t tensor = 0;
    uint64_t offset = 0;
  };
  std::optional<AddressHit> FindAddress(uint64_t addr, uint64_t bytes) const;

  // deallocate_cache / deallocate_blocks_cache semantics; unknown ids are a no-op.
  DetailedStatus Deallocate(int64_t cache_id, bool blocks);
  // remove_cache_key: unbinds; frees the cache when its id reference is gone and no key remains.
  void RemoveKey(const CacheKeySpec &key);
  // A peer completed a pull of tensors [tensor_begin, tensor_end) of the whole slot `slot`.
  // When every tensor of the slot has been pulled and the slot is bound to a req key of an
  // allocated cache, the key is consumed (upstream); prefix keys and registered caches never are.
  void OnSlotPulled(int64_t cache_id, uint32_t slot, uint32_t tensor_begin, uint32_t tensor_end);
  // unregister_cache: unknown ids are a no-op; an allocated cache is LLM_PARAM_INVALID.
  DetailedStatus Unregister(int64_t cache_id);
  // Drops everything (finalize). Memory still held by views is released when they go.
  void Clear();

  size_t cache_count() const;
  size_t key_count() const;
  // The registered (caller-owned) caches there are now, by id.
  std::vector<std::shared_ptr<CacheEntry>> RegisteredCaches() const;

 private:
  struct Record {
    std::shared_ptr<CacheEntry> entry;
    bool id_referenced = true;
    std::vector<BoundKey> keys;
    std::optional<uint64_t> blocks_model_id;
    std::map<uint32_t, std::vector<bool>> pulled_tensors;  // slot -> tensors pulled so far
  };
  static BoundKey ToBound(const CacheKeySpec &key);
  DetailedStatus CheckKeysLocked(const std::vector<CacheKeySpec> &keys, uint64_t batch_size) const;
  void EraseIfUnreferencedLocked(std::map<int64_t, Record>::iterator it);
  void EraseLocked(std::map<int64_t, Record>::iterator it);

  mutable std::mutex mutex_;
  int64_t next_cache_id_ = 1;  // upstream: cache ids start at 1, per process
  std::map<int64_t, Record> caches_;
  std::map<BoundKey, KeySlot> keys_;
  std::map<uint64_t, int64_t> blocks_keys_;  // model id -> cache id
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_CACHE_CACHE_REGISTRY_H_
