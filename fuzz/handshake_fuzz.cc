// SPDX-License-Identifier: Apache-2.0
// handshake_fuzz: the server side of the handshake on an accepted connection, which is what an
// unauthenticated client reaches first. LinkManager::ServeConnection runs it on one end of a
// socket pair; the other end carries the input, then end of stream.
//
// Input: one mode byte (bit 0: the server has a link secret), then the client's byte stream
// (hello, authentication, and after a completed handshake the link's first frames, which a
// real DataDistEngine without caches answers).
// Per input, ServeConnection returns when the handshake is done. A link it made is installed
// in the manager and read by its own thread until the end of the stream; the harness waits for
// that (bounded), then closes every link, so nothing outlives the input.
#include <sys/socket.h>

#include <chrono>
#include <thread>

#include "fuzz_support.h"
#include "link/link_manager.h"

using namespace llm_datadist;

namespace {
constexpr uint64_t kServerClusterId = 1;
constexpr std::chrono::milliseconds kWriteBudget(5000);
// With the client's stream ended every wait in the handshake ends at once; a link reader
// likewise. Longer than this is a hang.
constexpr std::chrono::milliseconds kStopBudget(5000);
constexpr std::chrono::milliseconds kSlowHandshake(1000);

struct Servers {
  DataDistEngine handler{kServerClusterId, LlmRole::kPrompt};
  std::unique_ptr<LinkManager> open, secret;
  Servers() {
    fuzz::Check(handler.Initialize({{OPTION_DEVICE_BACKEND, "cpu"}}), "initialize the handler engine");
    auto no_regions = [] { return std::vector<LocalRegion>{}; };
    open = std::make_unique<LinkManager>(kServerClusterId, &handler, no_regions, LinkOptions{});
    secret = std::make_unique<LinkManager>(kServerClusterId, &handler, no_regions,
                                           LinkOptions{"fuzz-secret"});
  }
};

bool AnyLinkActive(const LinkManager &manager) {
  for (uint64_t id : manager.linked_clusters()) {
    std::shared_ptr<Link> link = manager.Find(id);
    if (link && link->state() == Link::State::kActive) return true;
  }
  return false;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static Servers *servers = [] {
    fuzz::QuietLogs();
    return new Servers();  // lives for the process: libFuzzer never returns
  }();
  if (size < 1) return -1;
  LinkManager &manager = (data[0] & 1) ? *servers->secret : *servers->open;
  fuzz::SocketPair pair;
  const int peer = pair.fds[1];
  // The whole stream goes in first (it fits the socket buffer for inputs of libFuzzer's sizes;
  // a larger one is written on by the thread below while the handshake reads).
  std::thread writer([&] {
    fuzz::WriteDraining(peer, data + 1, size - 1, fuzz::FuzzClock::now() + kWriteBudget);
    shutdown(peer, SHUT_WR);
  });
  const auto started = fuzz::FuzzClock::now();
  manager.ServeConnection(pair.Release0(), "fuzz-peer");
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(fuzz::FuzzClock::now() - started);
  // A client that can hold a server's handshake thread this long on a closed stream is a
  // finding (a cheap way to tie up the server), though not a crash.
  if (took > kSlowHandshake)
    std::fprintf(stderr, "handshake_fuzz: slow handshake: ServeConnection took %lld ms\n",
                 static_cast<long long>(took.count()));
  writer.join();
  const auto stop_deadline = fuzz::FuzzClock::now() + kStopBudget;
  while (AnyLinkActive(manager)) {
    if (fuzz::FuzzClock::now() > stop_deadline) fuzz::Die("a link stayed active after the client closed its stream");
    pollfd p{peer, POLLIN, 0};
    if (poll(&p, 1, 1) > 0) fuzz::DrainAvailable(peer);
  }
  manager.CloseAll();
  return 0;
}
