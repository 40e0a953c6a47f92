// SPDX-License-Identifier: Apache-2.0
#include "cache/cache_registry.h"

#include <set>

#include "common/logging.h"

namespace llm_datadist {

namespace {
std::string DescribeKey(const CacheKeySpec &key) {
  if (key.is_prefix())
    return detail::Concat("CacheKey(prefix_id=", key.prefix_id, ", model_id=", key.model_id, ")");
  return detail::Concat("CacheKey(req_id=", key.req_id, ", model_id=", key.model_id, ")");
}
}  // namespace

int64_t CacheRegistry::NextCacheId() {
  std::lock_guard<std::mutex> lock(mutex_);
  return next_cache_id_++;
}

BoundKey CacheRegistry::ToBound(const CacheKeySpec &key) {
  BoundKey bound;
  bound.prefix = key.is_prefix();
  bound.id = key.is_prefix() ? key.prefix_id : key.req_id;
  bound.model_id = key.model_id;
  return bound;
}

DetailedStatus CacheRegistry::CheckKeys(const std::vector<CacheKeySpec> &keys, uint64_t batch_size) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return CheckKeysLocked(keys, batch_size);
}

DetailedStatus CacheRegistry::CheckKeysLocked(const std::vector<CacheKeySpec> &keys,
                                              uint64_t batch_size) const {
  LLMDD_CHECK(keys.size() <= batch_size, LLM_PARAM_INVALID, keys.size(),
              " cache keys given for a batch of ", batch_size, " slots");
  std::set<BoundKey> seen;
  for (size_t i = 0; i < keys.size(); ++i) {
    const CacheKeySpec &key = keys[i];
    if (key.is_padding()) continue;
    LLMDD_CHECK(!(key.is_prefix() && key.req_id != kInvalidId), LLM_PARAM_INVALID,
                "cache_keys[", i, "] sets both req_id ", key.req_id, " and prefix_id ",
                key.prefix_id, "; a key is either a req key or a prefix key");
    BoundKey bound = ToBound(key);
    LLMDD_CHECK(seen.insert(bound).second, LLM_PARAM_INVALID, "cache_keys[", i, "] ",
                DescribeKey(key), " appears twice in the same call");
    auto existing = keys_.find(bound);
    LLMDD_CHECK(existing == keys_.end(), LLM_PARAM_INVALID, "cache_keys[", i, "] ",
                DescribeKey(key), " is already bound to cache ", existing->second.cache_id,
                " batch ", existing->second.batch_index);
  }
  return DetailedStatus::Ok();
}

DetailedStatus CacheRegistry::CheckBlocksKey(const std::optional<BlocksKeySpec> &key) const {
  if (!key) return DetailedStatus::Ok();
  std::lock_guard<std::mutex> lock(mutex_);
  auto existing = blocks_keys_.find(key->model_id);
  LLMDD_CHECK(existing == blocks_keys_.end(), LLM_PARAM_INVALID, "BlocksCacheKey(model_id=",
              key->model_id, ") is already bound to cache ", existing->second);
  return DetailedStatus::Ok();
}

DetailedStatus CacheRegistry::Add(std::shared_ptr<CacheEntry> entry, const std::vector<CacheKeySpec> &keys,
                                  const std::optional<BlocksKeySpec> &blocks_key) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t batch = static_cast<uint64_t>(entry->desc.shape.empty() ? 0 : entry->desc.shape[0]);
  LLMDD_RETURN_IF_ERROR(CheckKeysLocked(keys, batch));
  if (blocks_key) {
    auto existing = blocks_keys_.find(blocks_key->model_id);
    LLMDD_CHECK(existing == blocks_keys_.end(), LLM_PARAM_INVALID, "BlocksCacheKey(model_id=",
                blocks_key->model_id, ") is already bound to cache ", existing->second);
  }
  Record record;
  const int64_t id = entry->cache_id;
  record.entry = std::move(entry);
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].is_padding()) continue;
    BoundKey bound = ToBound(keys[i]);
    keys_.emplace(bound, KeySlot{id, static_cast<uint32_t>(i)});
    record.keys.push_back(bound);
  }
  if (blocks_key) {
    blocks_keys_.emplace(blocks_key->model_id, id);
    record.blocks_model_id = blocks_key->model_id;
  }
  caches_.emplace(id, std::move(record));
  return DetailedStatus::Ok();
}

std::shared_ptr<CacheEntry> CacheRegistry::Find(int64_t cache_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = caches_.find(cache_id);
  return it == caches_.end() ? nullptr : it->second.entry;
}

std::optional<CacheRegistry::AddressHit> CacheRegistry::FindAddress(uint64_t addr, uint64_t bytes) const {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const auto &[id, record] : caches_) {
    const CacheEntry &entry = *record.entry;
    for (size_t t = 0; t < entry.tensor_addrs.size(); ++t) {
      const uint64_t base = entry.tensor_addrs[t];
      // offset + bytes <= tensor_bytes, written so that no sum can wrap
      if (addr < base || addr - base >= entry.tensor_bytes || bytes > entry.tensor_bytes - (addr - base)) continue;
      return AddressHit{record.entry, static_cast<uint32_t>(t), addr - base};
    }
  }
  return std::nullopt;
}

std::optional<KeySlot> CacheRegistry::FindKey(const CacheKeySpec &key) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = keys_.find(ToBound(key));
  if (it == keys_.end()) return std::nullopt;
  return it->second;
}

std::optional<int64_t> CacheRegistry::FindBlocksKey(uint64_t model_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = blocks_keys_.find(model_id);
  if (it == blocks_keys_.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> CacheRegistry::BlocksKeyOf(int64_t cache_id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) return std::nullopt;
  return it->second.blocks_model_id;
}

void CacheRegistry::EraseLocked(std::map<int64_t, Record>::iterator it) {
  for (const BoundKey &key : it->second.keys) keys_.erase(key);
  if (it->second.blocks_model_id) blocks_keys_.erase(*it->second.blocks_model_id);
  caches_.erase(it);
}

void CacheRegistry::EraseIfUnreferencedLocked(std::map<int64_t, Record>::iterator it) {
  if (!it->second.id_referenced && it->second.keys.empty()) {
    LLMDD_LOG(kDebug, "cache ", it->first, " released");
    EraseLocked(it);
  }
}

DetailedStatus CacheRegistry::Deallocate(int64_t cache_id, bool blocks) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) {
    LLMDD_LOG(kDebug, "deallocate of unknown or already released cache ", cache_id, ": no-op");
    return DetailedStatus::Ok();
  }
  const CacheEntry &entry = *it->second.entry;
  if (blocks) {
    LLMDD_CHECK(entry.is_blocks, LLM_PARAM_INVALID, "cache ", cache_id,
                " is not a blocks cache; use deallocate_cache");
  } else {
    LLMDD_CHECK(!entry.is_blocks, LLM_PARAM_INVALID, "cache ", cache_id,
                " is a blocks cache; use deallocate_blocks_cache");
  }
  if (entry.is_registered) {
    LLMDD_LOG(kDebug, "deallocate of registered cache ", cache_id, ": no-op (use unregister_cache)");
    return DetailedStatus::Ok();
  }
  it->second.id_referenced = false;
  if (blocks) {
    EraseLocked(it);  // blocks caches are freed at once, their key with them
  } else {
    EraseIfUnreferencedLocked(it);
  }
  return DetailedStatus::Ok();
}

void CacheRegistry::RemoveKey(const CacheKeySpec &key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto key_it = keys_.find(ToBound(key));
  if (key_it == keys_.end()) return;
  auto cache_it = caches_.find(key_it->second.cache_id);
  if (cache_it == caches_.end()) {
    keys_.erase(key_it);  // cannot happen while the invariants hold; keep the index clean anyway
    return;
  }
  if (cache_it->second.entry->is_registered) return;  // upstream: no effect on registered caches
  auto &bound = cache_it->second.keys;
  for (auto b = bound.begin(); b != bound.end(); ++b) {
    if (!(*b < key_it->first) && !(key_it->first < *b)) {
      bound.erase(b);
      break;
    }
  }
  keys_.erase(key_it);
  EraseIfUnreferencedLocked(cache_it);
}

void CacheRegistry::OnSlotPulled(int64_t cache_id, uint32_t slot, uint32_t tensor_begin, uint32_t tensor_end) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end() || it->second.entry->is_registered) return;
  Record &record = it->second;
  auto bound = record.keys.end();
  for (auto k = record.keys.begin(); k != record.keys.end(); ++k) {
    if (k->prefix) continue;
    auto slot_it = keys_.find(*k);
    if (slot_it != keys_.end() && slot_it->second.batch_index == slot) {
      bound = k;
      break;
    }
  }
  if (bound == record.keys.end()) return;
  const uint32_t num_tensors = record.entry->desc.num_tensors;
  std::vector<bool> &pulled = record.pulled_tensors[slot];
  pulled.resize(num_tensors, false);
  for (uint32_t t = tensor_begin; t < tensor_end && t < num_tensors; ++t) pulled[t] = true;
  for (bool done : pulled)
    if (!done) return;
  LLMDD_LOG(kDebug, "req key ", bound->id, " of cache ", cache_id, " consumed by a complete pull");
  keys_.erase(*bound);
  record.keys.erase(bound);
  record.pulled_tensors.erase(slot);
  EraseIfUnreferencedLocked(it);
}

DetailedStatus CacheRegistry::Unregister(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) return DetailedStatus::Ok();
  LLMDD_CHECK(it->second.entry->is_registered, LLM_PARAM_INVALID, "cache ", cache_id,
              " was allocated, not registered; use deallocate_cache or deallocate_blocks_cache");
  EraseLocked(it);
  return DetailedStatus::Ok();
}

void CacheRegistry::Clear() {
  std::lock_guard<std::mutex> lock(mutex_);
  caches_.clear();
  keys_.clear();
  blocks_keys_.clear();
}

size_t CacheRegistry::cache_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return caches_.size();
}

std::vector<std::shared_ptr<CacheEntry>> CacheRegistry::RegisteredCaches() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::shared_ptr<CacheEntry>> out;
  for (const auto &entry : caches_)
    if (entry.second.entry->is_registered) out.push_back(entry.second.entry);
  return out;
}

size_t CacheRegistry::key_count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return keys_.size() + blocks_keys_.size();
}

}  // namespace llm_datadist
