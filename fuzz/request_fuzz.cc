// SPDX-License-Identifier: Apache-2.0
// request_fuzz: the owner's validation and serving of a remote request, without the framing.
// The engine's OnPeerFrame gets a request as the link's reader would hand it over, against the
// caches of ServingEngine (fuzz_support.h).
//
// Input: one mode byte, then the request payload (a TransferRequest, link/messages.h, as the requester encodes it).
//   mode % 4 == 0  pull request
//   mode % 4 == 1  push request; two more bytes (little-endian) give header.data_bytes, of
//                  which up to kMaxPushData are in the socket; the stream then ends
//   mode % 4 == 2  release (of a transfer this link never served)
//   mode % 4 == 3  pull request, then a release of it (success = bit 2 of the mode byte),
//                  which is how a complete pull consumes a req key
// Per input: a socket pair and a Link (not started) over one end; the replies are read off
// the other end after each frame.
#include <sys/socket.h>

#include <chrono>

#include "fuzz_support.h"
#include "link/link.h"

using namespace llm_datadist;

namespace {
constexpr uint64_t kPeerClusterId = 2;
constexpr uint64_t kRequestId = 1;
constexpr size_t kMaxPushData = 4096;
// Bounds what a streamed reply can put in the socket (blocks lists come from the input) so
// that it fits the socket buffer: the harness reads replies only between frames.
constexpr size_t kMaxInput = 8192;

void Serve(DataDistEngine &engine, Link &link, FrameType type, const std::vector<uint8_t> &payload,
           uint64_t data_bytes) {
  FrameHeader header;
  header.type = static_cast<uint16_t>(type);
  header.request_id = kRequestId;
  header.payload_bytes = payload.size();
  header.data_bytes = data_bytes;
  // A failure is the engine saying the link must break; the next input gets a new link.
  DetailedStatus status = engine.OnPeerFrame(link, header, payload);
  (void)status;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fuzz::ServingEngine *serving = [] {
    fuzz::QuietLogs();
    return new fuzz::ServingEngine();  // lives for the process: libFuzzer never returns
  }();
  if (size < 1 || size > kMaxInput) return -1;  // -1: not added to the corpus
  const uint8_t mode = data[0];
  const uint8_t *rest = data + 1;
  size_t rest_size = size - 1;
  {
    fuzz::SocketPair pair;
    const int peer = pair.fds[1];
    Link link(fuzz::PlainSetup(fuzz::ServingEngine::kClusterId, kPeerClusterId), pair.Release0(), &serving->engine());
    DataDistEngine &engine = serving->engine();
    switch (mode % 4) {
      case 0:
        Serve(engine, link, FrameType::kPullRequest, {rest, rest + rest_size}, 0);
        break;
      case 1: {
        if (rest_size < 2) return -1;
        const uint64_t data_bytes = rest[0] | (uint64_t{rest[1]} << 8);
        std::vector<uint8_t> push_data(std::min<uint64_t>(data_bytes, kMaxPushData));
        for (size_t i = 0; i < push_data.size(); ++i) push_data[i] = static_cast<uint8_t>(i * 7);
        fuzz::WriteDraining(peer, push_data.data(), push_data.size(), fuzz::FuzzClock::now() + std::chrono::seconds(5));
        shutdown(peer, SHUT_WR);  // reading past what was sent ends at once
        Serve(engine, link, FrameType::kPushRequest, {rest + 2, rest + rest_size}, data_bytes);
        break;
      }
      case 2:
        Serve(engine, link, FrameType::kRelease, {rest, rest + rest_size}, 0);
        break;
      case 3:
        Serve(engine, link, FrameType::kPullRequest, {rest, rest + rest_size}, 0);
        fuzz::DrainAvailable(peer);
        Serve(engine, link, FrameType::kRelease, {static_cast<uint8_t>((mode >> 2) & 1)}, 0);
        break;
    }
    fuzz::DrainAvailable(peer);
  }
  serving->Restore();
  return 0;
}
