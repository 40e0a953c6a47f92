// SPDX-License-Identifier: Apache-2.0
// What the harnesses share: socket pairs, bounded writing and draining, quiet logs, and the
// serving engine that frame_fuzz and request_fuzz send requests to.
//
// libFuzzer runs millions of inputs in one process, so everything here is either made once
// (engines) or made and destroyed per input (sockets, links); a harness that fails to clean up
// shows up as a leak report or an fd/rss limit, not as silently different behaviour.
#ifndef LLM_DATADIST_FUZZ_FUZZ_SUPPORT_H_
#define LLM_DATADIST_FUZZ_FUZZ_SUPPORT_H_

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/logging.h"
#include "engine/data_dist_engine.h"

namespace llm_datadist {
namespace fuzz {

using FuzzClock = std::chrono::steady_clock;

// A harness bug or a hang the sanitizers would not see: stop with a message libFuzzer keeps.
[[noreturn]] inline void Die(const char *what) {
  std::fprintf(stderr, "fuzz harness: %s\n", what);
  std::abort();
}

inline void Check(const DetailedStatus &status, const char *what) {
  if (!status.ok()) {
    std::fprintf(stderr, "fuzz harness: %s: %s\n", what, status.message().c_str());
    std::abort();
  }
}

// Info lines per input (links closing, requests refused) would drown libFuzzer's output.
// LLMDD_FUZZ_LOG=1 keeps them, to see what a reproducer or a seed does.
inline void QuietLogs() {
  const char *keep = std::getenv("LLMDD_FUZZ_LOG");
  if (keep == nullptr || std::string(keep) != "1") SetLogLevel(LogLevel::kError);
}

// A connected, non-blocking AF_UNIX stream pair. [0] is the side under test, [1] the peer.
struct SocketPair {
  int fds[2] = {-1, -1};
  SocketPair() {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) Die("socketpair failed");
  }
  ~SocketPair() {
    for (int fd : fds)
      if (fd >= 0) close(fd);
  }
  // The side under test was handed to something that closes it.
  int Release0() {
    int fd = fds[0];
    fds[0] = -1;
    return fd;
  }
  SocketPair(const SocketPair &) = delete;
  SocketPair &operator=(const SocketPair &) = delete;
};

// Reads (and drops) whatever `fd` has now. Returns false once the other side closed.
inline bool DrainAvailable(int fd) {
  uint8_t sink[65536];
  for (int i = 0; i < 64; ++i) {  // bounded: at most 4 MiB per call
    ssize_t n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) return false;
    return !(errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
  }
  return true;
}

// Writes all of data to `fd`, reading what the other side answers meanwhile so that neither
// side's buffer fills. Returns false when the other side stopped reading (closed) or the
// deadline passed; the rest is then not written (the side under test gave up on the stream).
inline bool WriteDraining(int fd, const uint8_t *data, size_t size, FuzzClock::time_point deadline) {
  size_t sent = 0;
  while (sent < size) {
    if (FuzzClock::now() > deadline) return false;
    pollfd p{fd, POLLIN | POLLOUT, 0};
    if (poll(&p, 1, 10) < 0 && errno != EINTR) return false;
    if (p.revents & POLLIN) DrainAvailable(fd);
    if (p.revents & (POLLERR | POLLHUP)) return false;
    if (p.revents & POLLOUT) {
      ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<size_t>(n);
      else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    }
  }
  return true;
}

// A link as a tcp handshake leaves it: nothing shared, every transfer owner-streamed.
inline LinkSetup PlainSetup(uint64_t local_cluster_id, uint64_t peer_cluster_id) {
  LinkSetup setup;
  setup.local_cluster_id = local_cluster_id;
  setup.peer_cluster_id = peer_cluster_id;
  setup.transport_reason = "fuzz harness";
  return setup;
}

inline CacheDesc Desc(CachePlacement placement, uint32_t num_tensors, std::vector<int64_t> shape) {
  CacheDesc desc;
  desc.placement = placement;
  desc.num_tensors = num_tensors;
  desc.data_type = DT_UINT8;
  desc.shape = std::move(shape);
  return desc;
}

// The owner engine the request paths run against: small host and (CPU) device pools and three
// caches. Keys and cache ids are fixed, so a seed means the same thing in every run:
//   cache 1: blocks cache, device, 2 tensors of 8 blocks x 32 bytes, BlocksCacheKey(model 7)
//   cache 2: contiguous, device, 1 tensor of 2 slots x 16 bytes, no keys (by id and index)
//   cache 3: contiguous, host, 2 tensors of 4 slots x 64 bytes, no keys (by id and index)
//   cache 4: like cache 3, with req keys 100 (slot 0) and 101 (slot 1), prefix key 200 (slot 2)
// A complete pull consumes a req key (upstream's rule): Restore() puts cache 4 back afterwards.
// It gets a new id then (ids are never reused), which only a by-id request for cache 4 notices;
// by-id requests have cache 3, which never changes.
class ServingEngine {
 public:
  static constexpr uint64_t kClusterId = 1;
  static constexpr uint64_t kBlocksModelId = 7;
  static constexpr uint64_t kReqKeys[2] = {100, 101};
  static constexpr uint64_t kPrefixKey = 200;

  ServingEngine() : engine_(kClusterId, LlmRole::kPrompt) {
    Check(engine_.Initialize({{OPTION_DEVICE_BACKEND, "cpu"},
                              {OPTION_MEM_POOL_CONFIG, "{\"memory_size\": 1048576, \"page_shift\": 10}"},
                              {OPTION_HOST_MEM_POOL_CONFIG, "{\"memory_size\": 1048576, \"page_shift\": 10}"}}),
          "initialize the serving engine");
    std::shared_ptr<CacheEntry> entry;
    Check(engine_.AllocateBlocksCache(Desc(CachePlacement::kDevice, 2, {8, 32}), BlocksKeySpec{kClusterId, kBlocksModelId},
                                      &entry),
          "allocate the blocks cache");
    Fill(*entry);
    Check(engine_.AllocateCache(Desc(CachePlacement::kDevice, 1, {2, 16}), {}, &entry), "allocate the 1-tensor cache");
    Fill(*entry);
    Check(engine_.AllocateCache(Desc(CachePlacement::kHost, 2, {4, 64}), {}, &entry), "allocate the unkeyed cache");
    Fill(*entry);
    AllocateKeyed();
  }

  DataDistEngine &engine() { return engine_; }

  // Re-creates the keyed cache if a pull consumed one of its req keys.
  void Restore() {
    bool intact = true;
    for (const CacheKeySpec &key : Keys())
      intact = intact && engine_.registry().FindKey(key).has_value();
    if (intact) return;
    for (const CacheKeySpec &key : Keys()) Check(engine_.RemoveCacheKey(key), "remove a key");
    Check(engine_.DeallocateCache(keyed_cache_id_), "deallocate the keyed cache");
    AllocateKeyed();
  }

 private:
  static std::vector<CacheKeySpec> Keys() {
    CacheKeySpec req0{kClusterId, kReqKeys[0], 0, kInvalidId};
    CacheKeySpec req1{kClusterId, kReqKeys[1], 0, kInvalidId};
    CacheKeySpec prefix{kClusterId, kInvalidId, 0, kPrefixKey};
    return {req0, req1, prefix};
  }
  // Known bytes, so a streamed reply carries something other than zeros.
  static void Fill(const CacheEntry &entry) {
    for (size_t t = 0; t < entry.tensor_addrs.size(); ++t) {
      auto *p = reinterpret_cast<uint8_t *>(entry.tensor_addrs[t]);
      for (uint64_t i = 0; i < entry.tensor_bytes; ++i) p[i] = static_cast<uint8_t>(i * 31 + t);
    }
  }
  void AllocateKeyed() {
    std::shared_ptr<CacheEntry> entry;
    Check(engine_.AllocateCache(Desc(CachePlacement::kHost, 2, {4, 64}), Keys(), &entry), "allocate the keyed cache");
    Fill(*entry);
    keyed_cache_id_ = entry->cache_id;
  }

  DataDistEngine engine_;
  int64_t keyed_cache_id_ = -1;
};

}  // namespace fuzz
}  // namespace llm_datadist

#endif  // LLM_DATADIST_FUZZ_FUZZ_SUPPORT_H_
