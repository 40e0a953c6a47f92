// SPDX-License-Identifier: Apache-2.0
// Every message of the link protocol as a struct with Encode / Decode, in one place: the
// handshake frames (link_manager.cc) and the transfer frames (engine/transfer.cc). Frame
// headers and the byte order are wire.h's. Decode reads what Encode writes and returns false
// for anything else (truncated, an enum out of range, a count past its limit); it never reads
// out of bounds. A change here is a change of the wire: bump kProtocolVersion (wire.h) and
// regenerate the fuzz seeds (fuzz/make_seeds.py, which mirrors these encoders).
#ifndef LLM_DATADIST_LINK_MESSAGES_H_
#define LLM_DATADIST_LINK_MESSAGES_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/sha256.h"
#include "link/wire.h"
#include "llm_datadist/status.h"
#include "transport/transport.h"

namespace llm_datadist {

// ---- transfers ------------------------------------------------------------------------------

// Which key names the remote cache of a transfer.
// kAddress: a push to one tensor slot named by its address in the owner's memory (upstream's
// TransferConfig); the owner resolves it to a cache id and slot (transfer.cc, AddressToSlot).
enum class RemoteKeyKind : uint8_t { kCacheKey = 0, kCacheIdAndIndex = 1, kBlocksKey = 2, kAddress = 3 };
constexpr uint8_t kMaxRemoteKeyKind = static_cast<uint8_t>(RemoteKeyKind::kAddress);

// How a transfer's chunks are laid out on the two sides (engine/transfer.cc, ChunksOf).
enum class Layout : uint8_t { kSlotToSlot = 0, kBlocksToBlocks = 1, kSlotToBlocks = 2 };
// kDescribe: the owner answers where each tensor lives and the requester reads it one-sided;
// kStream: the owner sends the bytes after its reply.
enum class Delivery : uint8_t { kDescribe = 0, kStream = 1 };
// Where an owner's tensor lives, as told to the requester.
enum class Location : uint8_t { kRegion = 0, kRawHost = 1, kUnreadable = 2 };

// kPullRequest / kPushRequest: the owner-side selection of a transfer.
struct TransferRequest {
  RemoteKeyKind key_kind = RemoteKeyKind::kCacheKey;
  uint64_t req_id = ~0ull, prefix_id = ~0ull, model_id = 0;
  int64_t cache_id = -1;
  uint32_t batch_index = 0;
  Layout layout = Layout::kSlotToSlot;
  Delivery delivery = Delivery::kDescribe;
  bool all_tensors = true;  // owner must have exactly tensor_count tensors
  uint32_t tensor_begin = 0, tensor_count = 0;
  uint64_t size = 0;         // kSlotToSlot: bytes per tensor; kBlocksToBlocks: last chunk's bytes (0: a block)
  bool whole_slot = false;   // kSlotToSlot: the requester asked for the whole slot (size -1)
  uint64_t chunk_bytes = 0;  // kBlocksToBlocks: block bytes; kSlotToBlocks: chunk bytes
  uint32_t chunk_count = 0;  // kSlotToBlocks
  std::vector<uint64_t> blocks;  // kBlocksToBlocks: the owner's block indices; kAddress: the one address
  // The requester's sync_kv_timeout: the owner streams and receives for at least this long, so a
  // slow transfer ends in the requester's LLM_TIMEOUT, not in the owner giving up first.
  uint32_t timeout_ms = 0;
  // A described push (kPushRequest, kDescribe; protocol 6): the bytes the requester will write,
  // which the owner checks as it checks a streamed push's data_bytes. 0 otherwise.
  uint64_t push_bytes = 0;

  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// The longest an owner serves one transfer, whatever timeout_ms the requester sends.
constexpr uint32_t kMaxServeTimeoutMs = 10 * 60 * 1000;

// A status as replies carry it: code, message, context (the "operation" entry is the
// receiver's to add, so it is dropped on decode). At most kMaxStatusContext context entries.
constexpr uint32_t kMaxStatusContext = 64;
void PutStatus(ByteWriter &w, const DetailedStatus &status);
bool GetStatus(ByteReader &r, DetailedStatus *out);
// kPushReply is a status alone.
std::vector<uint8_t> EncodeStatus(const DetailedStatus &status);

// kPullReply: a status; when ok, the owner's slot geometry, where each tensor lives (described
// pulls; none for streamed ones), and whether the owner waits for a kRelease.
struct DescribedTensor {
  Location location = Location::kUnreadable;
  uint8_t region_id = 0;  // kRegion: a RegionId
  uint64_t value = 0;     // kRegion: offset in the region; kRawHost: the address
};
constexpr uint32_t kMaxDescribedTensors = 1u << 20;
struct PullReply {
  DetailedStatus status;
  uint64_t owner_stride = 0;
  uint32_t slot = 0;
  std::vector<DescribedTensor> tensors;
  // False when the owner kept nothing for this request (a streamed pull that consumes no key):
  // the requester then sends no kRelease.
  bool needs_release = true;

  std::vector<uint8_t> Encode() const;  // a failed status: the status only
  bool Decode(const std::vector<uint8_t> &payload);
};

// kPushReply to a described push (protocol 6) has a PullReply's fields: the status, and when ok
// the owner's slot geometry and where each destination tensor lives. needs_release is always
// true: the owner holds the destination until the requester's kPushComplete. (A streamed push's
// kPushReply is a status alone.)
using PushDescribeReply = PullReply;

// kPushComplete (protocol 6): the requester is done writing the described push `push_request_id`
// (success: every byte written and flushed to the owner's memory). The owner releases what it
// held for it and answers with a kPushReply status; the push has succeeded only when that says ok.
struct PushComplete {
  uint64_t push_request_id = 0;
  bool success = false;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// kRelease: the requester is done with a described (or key-consuming) pull.
struct ReleaseMessage {
  bool success = false;  // a complete, successful read (a req key may be consumed)
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// ---- handshake (link_manager.h has the sequence) -------------------------------------------

constexpr size_t kNonceBytes = 16;
constexpr uint32_t kMaxHandshakeRegions = 16;
constexpr uint32_t kMaxBootIdBytes = 256;
constexpr uint32_t kMaxUnixNameBytes = 107;  // sun_path less the abstract namespace's NUL
constexpr uint32_t kMaxShmAbortReason = 4096;

// A region as a handshake announces it (the memfd itself travels on the pool channel).
struct RegionAnnouncement {
  uint8_t id = 0;
  RegionKind kind = RegionKind::kHostPool;
  uint64_t size = 0;
  bool has_memfd = false;
  bool has_ipc = false;
  cuda::CUipcMemHandle ipc_handle{};

  static RegionAnnouncement Of(const LocalRegion &region);
  RemoteRegion ToRemote() const;
};

// Transport offers (TransportOffer, transport.h) travel after the regions of kAuth and
// kAuthReply, only when some provider offers bytes: a peer of protocol 4 reads nothing past
// the regions, and with no offers the frames are the same bytes as protocol 4's.
constexpr uint32_t kMaxTransportOffers = 8;

// C->S kHello.
struct HelloMessage {
  uint64_t client_id = 0;
  uint64_t expected_server_id = 0;
  std::vector<uint8_t> nonce = std::vector<uint8_t>(kNonceBytes);  // exactly kNonceBytes on the wire
  bool has_secret = false;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// S->C kHelloReply. A refusal carries the status and message only.
struct HelloReply {
  Status status = LLM_SUCCESS;
  std::string message;
  uint64_t server_id = 0;
  std::vector<uint8_t> nonce = std::vector<uint8_t>(kNonceBytes);  // exactly kNonceBytes on the wire
  bool has_secret = false;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// C->S kAuth.
struct AuthMessage {
  Sha256Digest mac{};
  std::string boot_id;
  int32_t pid = -1;
  std::vector<RegionAnnouncement> regions;
  std::vector<TransportOffer> offers;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// S->C kAuthReply. A refusal carries the status and message only.
struct AuthReply {
  Status status = LLM_SUCCESS;
  std::string message;
  Sha256Digest mac{};
  std::string boot_id;
  int32_t pid = -1;
  std::string unix_name;  // the pool channel's abstract socket; empty: no pools offered
  std::vector<RegionAnnouncement> regions;
  std::vector<TransportOffer> offers;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// C->S kShmAbort: the client will not open the offered pool channel, and why.
struct ShmAbortMessage {
  std::string reason;
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

// S->C kLinkAck. pools_mapped is the transport byte of protocols 1-4: kShm (1) when the server
// mapped the client's pools, kTcp (0) otherwise.
struct LinkAck {
  Status status = LLM_SUCCESS;
  std::string message;
  bool pools_mapped = false;
  std::string reason;
  bool frames_on_channel = false;  // the link's frames continue on the Unix pool channel
  std::vector<uint8_t> Encode() const;
  bool Decode(const std::vector<uint8_t> &payload);
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_MESSAGES_H_
