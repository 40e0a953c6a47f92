// SPDX-License-Identifier: Apache-2.0
// The published blocks-cache table: what a peer's LookupCacheTable reads back after puts,
// replacements, removals, compaction and a full table, and while a writer keeps changing it.
#include <sys/mman.h>

#include <atomic>
#include <thread>
#include <vector>

#include "cache/cache_table.h"
#include "test_harness.h"

using llm_datadist::CacheTablePublisher;
using llm_datadist::LookupCacheTable;
using llm_datadist::TableEntry;
using llm_datadist::TableKey;
using llm_datadist::TableLocation;

namespace {

TableEntry Entry(uint64_t model_id, int64_t cache_id, size_t num_tensors) {
  TableEntry e;
  e.key = TableKey::Blocks(model_id);
  e.cache_id = cache_id;
  e.stride = 4096;
  e.num_blocks = 8;
  e.location = TableLocation::kRawHost;
  for (size_t t = 0; t < num_tensors; ++t) e.tensors.push_back(model_id * 1000 + t);
  return e;
}

// The table as a peer sees it: a second, read-only mapping of the memfd.
struct PeerView {
  explicit PeerView(const CacheTablePublisher &table) : size(table.capacity()) {
    void *p = mmap(nullptr, size, PROT_READ, MAP_SHARED, table.fd(), 0);
    mapped = p == MAP_FAILED ? nullptr : static_cast<const uint8_t *>(p);
  }
  ~PeerView() {
    if (mapped != nullptr) munmap(const_cast<uint8_t *>(mapped), size);
  }
  std::optional<TableEntry> Find(uint64_t model_id) const {
    return LookupCacheTable(mapped, size, TableKey::Blocks(model_id));
  }
  std::optional<TableEntry> Find(const TableKey &key, uint64_t *hint = nullptr) const {
    return LookupCacheTable(mapped, size, key, hint);
  }
  uint64_t size;
  const uint8_t *mapped = nullptr;
};

}  // namespace

LLMDD_TEST(CacheTable, PutReplaceRemove) {
  CacheTablePublisher table;
  ASSERT_OK(table.Create());
  PeerView peer(table);
  ASSERT_TRUE(peer.mapped != nullptr);
  EXPECT_FALSE(peer.Find(1).has_value());
  table.Put(Entry(1, 10, 2));
  table.Put(Entry(2, 20, 3));
  auto one = peer.Find(1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->cache_id, int64_t{10});
  EXPECT_EQ(one->tensors.size(), size_t{2});
  EXPECT_EQ(one->tensors[1], uint64_t{1001});
  table.Put(Entry(1, 11, 4));  // replaced: the old record becomes a tombstone
  one = peer.Find(1);
  ASSERT_TRUE(one.has_value());
  EXPECT_EQ(one->cache_id, int64_t{11});
  EXPECT_EQ(one->tensors.size(), size_t{4});
  table.Remove(TableKey::Blocks(1));
  EXPECT_FALSE(peer.Find(1).has_value());
  auto two = peer.Find(2);
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->cache_id, int64_t{20});
  table.Remove(TableKey::Blocks(3));  // absent: no-op
  EXPECT_EQ(table.published_count(), size_t{1});
  table.Clear();
  EXPECT_FALSE(peer.Find(2).has_value());
  EXPECT_EQ(table.published_count(), size_t{0});
}

LLMDD_TEST(CacheTable, RemovalsCompactSoLookupsStayShort) {
  CacheTablePublisher table;
  ASSERT_OK(table.Create());
  PeerView peer(table);
  for (uint64_t id = 0; id < 1000; ++id) table.Put(Entry(id, static_cast<int64_t>(id), 2));
  const uint64_t full = table.bytes_used();
  for (uint64_t id = 0; id < 900; ++id) table.Remove(TableKey::Blocks(id));
  // Tombstones never exceed half the bytes in use.
  EXPECT_TRUE(table.bytes_used() < full / 2);
  for (uint64_t id = 0; id < 1000; ++id) EXPECT_EQ(peer.Find(id).has_value(), id >= 900);
  auto last = peer.Find(999);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->tensors[0], uint64_t{999000});
}

LLMDD_TEST(CacheTable, FullTableLeavesOutThenPublishesWhenRoomReturns) {
  // Room for three 2-tensor entries (72 bytes each) after the 32-byte header.
  CacheTablePublisher table(32 + 3 * 72);
  ASSERT_OK(table.Create());
  PeerView peer(table);
  for (uint64_t id = 1; id <= 4; ++id) table.Put(Entry(id, static_cast<int64_t>(id), 2));
  EXPECT_EQ(table.published_count(), size_t{3});
  int found = 0;
  for (uint64_t id = 1; id <= 4; ++id) found += peer.Find(id).has_value() ? 1 : 0;
  EXPECT_EQ(found, 3);
  // Replacing and re-putting in a full table compacts instead of losing live entries.
  table.Put(Entry(1, 100, 2));
  EXPECT_EQ(table.published_count(), size_t{3});
  // Removing a published entry makes room: the left-out one appears.
  uint64_t published_victim = 0;
  for (uint64_t id = 1; id <= 4 && published_victim == 0; ++id)
    if (peer.Find(id).has_value()) published_victim = id;
  table.Remove(TableKey::Blocks(published_victim));
  EXPECT_EQ(table.published_count(), size_t{3});
  for (uint64_t id = 1; id <= 4; ++id) EXPECT_EQ(peer.Find(id).has_value(), id != published_victim);
}

LLMDD_TEST(CacheTable, ReaderNeverSeesATornEntry) {
  CacheTablePublisher table;
  ASSERT_OK(table.Create());
  PeerView peer(table);
  // Entry 7 is rewritten with new contents every round; every tensor of a consistent copy
  // encodes the round it was written in.
  auto versioned = [](int64_t round) {
    TableEntry e = Entry(7, round, 8);
    for (size_t t = 0; t < e.tensors.size(); ++t) e.tensors[t] = static_cast<uint64_t>(round) * 16 + t;
    return e;
  };
  table.Put(versioned(0));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int round = 1; round <= 20000; ++round) {
      table.Put(Entry(static_cast<uint64_t>(100 + round % 50), round, 3));
      if (round % 3 == 0) table.Remove(TableKey::Blocks(static_cast<uint64_t>(100 + (round / 3) % 50)));
      table.Put(versioned(round));
    }
    stop = true;
  });
  int bad = 0;
  int seen = 0;
  while (!stop) {
    auto e = peer.Find(7);
    if (!e) continue;  // kept changing while read: a real reader then goes two-sided
    ++seen;
    if (e->tensors.size() != 8) {
      ++bad;
      continue;
    }
    for (size_t t = 0; t < 8; ++t)
      if (e->tensors[t] != static_cast<uint64_t>(e->cache_id) * 16 + t) ++bad;
  }
  writer.join();
  EXPECT_EQ(bad, 0);
  EXPECT_TRUE(seen > 0);
  auto last = peer.Find(7);
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->cache_id, int64_t{20000});
}

LLMDD_TEST(CacheTable, PrefixKeysAreTheirOwnKeysWithTheirSlot) {
  CacheTablePublisher table;
  ASSERT_OK(table.Create());
  PeerView peer(table);
  TableEntry blocks = Entry(5, 50, 2);
  TableEntry prefix = Entry(5, 51, 2);  // model id 5 too: a prefix key never matches a blocks key
  prefix.key = TableKey::Prefix(9, 5);
  prefix.slot = 3;
  table.Put(blocks);
  table.Put(prefix);
  auto b = peer.Find(TableKey::Blocks(5));
  auto p = peer.Find(TableKey::Prefix(9, 5));
  ASSERT_TRUE(b.has_value());
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(b->cache_id, int64_t{50});
  EXPECT_EQ(p->cache_id, int64_t{51});
  EXPECT_EQ(p->slot, uint32_t{3});
  EXPECT_FALSE(peer.Find(TableKey::Prefix(9, 6)).has_value());
  EXPECT_FALSE(peer.Find(TableKey::Prefix(8, 5)).has_value());
  // Every key of a cache goes with it, and only those.
  TableEntry other = Entry(6, 51, 1);
  table.Put(other);
  table.RemoveCache(51);
  EXPECT_FALSE(peer.Find(TableKey::Prefix(9, 5)).has_value());
  EXPECT_FALSE(peer.Find(6).has_value());
  EXPECT_TRUE(peer.Find(5).has_value());
  EXPECT_EQ(table.published_count(), size_t{1});
}

LLMDD_TEST(CacheTable, AHintFindsTheKeyAndAStaleOneFallsBackToTheWalk) {
  CacheTablePublisher table;
  ASSERT_OK(table.Create());
  PeerView peer(table);
  for (uint64_t id = 0; id < 64; ++id) table.Put(Entry(id, static_cast<int64_t>(id), 2));
  uint64_t hint = 0;
  auto found = peer.Find(TableKey::Blocks(40), &hint);
  ASSERT_TRUE(found.has_value());
  const uint64_t where = hint;
  EXPECT_TRUE(where > 32);
  // The same key through its hint; another key through the wrong hint (a walk, then its own).
  EXPECT_EQ(peer.Find(TableKey::Blocks(40), &hint)->cache_id, int64_t{40});
  EXPECT_EQ(hint, where);
  EXPECT_EQ(peer.Find(TableKey::Blocks(41), &hint)->cache_id, int64_t{41});
  EXPECT_TRUE(hint != where);
  // Replaced: the old record is a tombstone, the hint to it finds the new record by the walk.
  hint = where;
  table.Put(Entry(40, 400, 3));
  auto replaced = peer.Find(TableKey::Blocks(40), &hint);
  ASSERT_TRUE(replaced.has_value());
  EXPECT_EQ(replaced->cache_id, int64_t{400});
  EXPECT_TRUE(hint != where);
  // Compacted away under the hint (it now points into other records): still the right answer.
  for (uint64_t id = 0; id < 40; ++id) table.Remove(TableKey::Blocks(id));
  hint = where;
  EXPECT_EQ(peer.Find(TableKey::Blocks(40), &hint)->cache_id, int64_t{400});
  hint = where;
  EXPECT_FALSE(peer.Find(TableKey::Blocks(3), &hint).has_value());
  // A hint past the table's end or off the record grid is ignored.
  hint = (4ull << 20) - 8;
  EXPECT_EQ(peer.Find(TableKey::Blocks(63), &hint)->cache_id, int64_t{63});
  hint = where + 4;
  EXPECT_EQ(peer.Find(TableKey::Blocks(63), &hint)->cache_id, int64_t{63});
}
