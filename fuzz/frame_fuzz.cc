// SPDX-License-Identifier: Apache-2.0
// frame_fuzz: the input is the byte stream a linked peer sends. A started Link reads it with
// RecvFrame on its reader thread and hands requests to a real DataDistEngine (ServingEngine),
// exactly as after a handshake: frame decoding, heartbeats, replies nobody waits for (their
// data drained), unlink, and pull / push / release against real caches.
//
// Per input: a socket pair, a Link over one end, the input written into the other (reading
// the link's replies meanwhile), the write side shut, then wait until the link noticed the
// end of the stream. A link that stays active on a closed stream is a hang, reported as such.
#include <sys/socket.h>

#include <chrono>

#include "fuzz_support.h"
#include "link/link.h"

using namespace llm_datadist;

namespace {
constexpr uint64_t kPeerClusterId = 2;
// Writing the input and draining the replies: generous, inputs are small.
constexpr std::chrono::milliseconds kWriteBudget(5000);
// After EOF the reader stops at once; longer than this is a hang.
constexpr std::chrono::milliseconds kStopBudget(5000);
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fuzz::ServingEngine *serving = [] {
    fuzz::QuietLogs();
    return new fuzz::ServingEngine();  // lives for the process: libFuzzer never returns
  }();
  {
    fuzz::SocketPair pair;
    Link link(fuzz::PlainSetup(fuzz::ServingEngine::kClusterId, kPeerClusterId), pair.Release0(), &serving->engine());
    link.Start();
    const int peer = pair.fds[1];
    fuzz::WriteDraining(peer, data, size, fuzz::FuzzClock::now() + kWriteBudget);
    shutdown(peer, SHUT_WR);
    const auto stop_deadline = fuzz::FuzzClock::now() + kStopBudget;
    while (link.state() == Link::State::kActive) {
      if (fuzz::FuzzClock::now() > stop_deadline) fuzz::Die("the link stayed active after the peer closed its stream");
      pollfd p{peer, POLLIN, 0};
      if (poll(&p, 1, 1) > 0) fuzz::DrainAvailable(peer);
    }
    // Not active means closed: the connection is shut down, so a reply the reader may still
    // be sending fails at once and ~Link's join returns.
  }
  serving->Restore();
  return 0;
}
