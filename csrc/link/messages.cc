// SPDX-License-Identifier: Apache-2.0
#include "link/messages.h"

namespace llm_datadist {

namespace {

void PutNonce(ByteWriter &w, const std::vector<uint8_t> &nonce) {
  std::vector<uint8_t> fixed(nonce);
  fixed.resize(kNonceBytes);
  w.PutBytes(fixed.data(), fixed.size());
}

bool GetNonce(ByteReader &r, std::vector<uint8_t> *nonce) {
  nonce->resize(kNonceBytes);
  return r.GetBytes(nonce->data(), nonce->size());
}

// A byte that must be 0 or 1.
bool GetFlag(ByteReader &r, bool *out) {
  uint8_t v = 0;
  if (!r.Get(&v) || v > 1) return false;
  *out = v != 0;
  return true;
}

// A byte read as a flag the way protocols 1-4 always did: any non-zero value is true.
bool GetLenientFlag(ByteReader &r, bool *out) {
  uint8_t v = 0;
  if (!r.Get(&v)) return false;
  *out = v != 0;
  return true;
}

template <typename E>
bool GetEnum(ByteReader &r, uint8_t max, E *out) {
  uint8_t v = 0;
  if (!r.Get(&v) || v > max) return false;
  *out = static_cast<E>(v);
  return true;
}

void PutRegions(ByteWriter &w, const std::vector<RegionAnnouncement> &regions) {
  w.Put<uint32_t>(static_cast<uint32_t>(regions.size()));
  for (const RegionAnnouncement &r : regions) {
    w.Put(r.id).Put(static_cast<uint8_t>(r.kind)).Put(r.size).Put<uint8_t>(r.has_memfd).Put<uint8_t>(r.has_ipc);
    w.PutBytes(&r.ipc_handle, sizeof(r.ipc_handle));
  }
}

bool GetRegions(ByteReader &r, std::vector<RegionAnnouncement> *out) {
  uint32_t n = 0;
  if (!r.Get(&n) || n > kMaxHandshakeRegions) return false;
  out->resize(n);
  for (RegionAnnouncement &a : *out) {
    if (!r.Get(&a.id) || !GetEnum(r, kMaxRegionKind, &a.kind) || !r.Get(&a.size) || !GetLenientFlag(r, &a.has_memfd) ||
        !GetLenientFlag(r, &a.has_ipc) || !r.GetBytes(&a.ipc_handle, sizeof(a.ipc_handle)))
      return false;
  }
  return true;
}

// The offers section: written only when some offer has bytes (see TransportOffer).
void PutOffers(ByteWriter &w, const std::vector<TransportOffer> &offers) {
  uint32_t n = 0;
  for (const TransportOffer &o : offers) n += o.bytes.empty() ? 0 : 1;
  if (n == 0) return;
  w.Put<uint32_t>(n);
  for (const TransportOffer &o : offers) {
    if (o.bytes.empty()) continue;
    w.Put(static_cast<uint8_t>(o.kind)).PutVector(o.bytes);
  }
}

bool GetOffers(ByteReader &r, std::vector<TransportOffer> *out) {
  out->clear();
  if (r.remaining() == 0) return true;  // none offered
  uint32_t n = 0;
  if (!r.Get(&n) || n == 0 || n > kMaxTransportOffers) return false;
  out->resize(n);
  for (TransportOffer &o : *out) {
    // Kinds this build does not know are kept: their provider is absent and never asks.
    uint8_t kind = 0;
    if (!r.Get(&kind) || !r.GetVector(&o.bytes, static_cast<uint32_t>(r.remaining())) || o.bytes.empty()) return false;
    o.kind = static_cast<TransportKind>(kind);
  }
  return true;
}

}  // namespace

// ---- transfers ------------------------------------------------------------------------------

std::vector<uint8_t> TransferRequest::Encode() const {
  ByteWriter w;
  w.Put(static_cast<uint8_t>(key_kind)).Put(req_id).Put(prefix_id).Put(model_id).Put(cache_id).Put(batch_index);
  w.Put(static_cast<uint8_t>(layout)).Put(static_cast<uint8_t>(delivery)).Put<uint8_t>(all_tensors);
  w.Put(tensor_begin).Put(tensor_count).Put(size).Put<uint8_t>(whole_slot).Put(chunk_bytes).Put(chunk_count);
  w.PutVector(blocks).Put(timeout_ms).Put(push_bytes);
  return w.bytes();
}

bool TransferRequest::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return GetEnum(r, kMaxRemoteKeyKind, &key_kind) && r.Get(&req_id) && r.Get(&prefix_id) && r.Get(&model_id) &&
         r.Get(&cache_id) && r.Get(&batch_index) && GetEnum(r, static_cast<uint8_t>(Layout::kSlotToBlocks), &layout) &&
         GetEnum(r, static_cast<uint8_t>(Delivery::kStream), &delivery) && GetFlag(r, &all_tensors) &&
         r.Get(&tensor_begin) && r.Get(&tensor_count) && r.Get(&size) && GetFlag(r, &whole_slot) &&
         r.Get(&chunk_bytes) && r.Get(&chunk_count) && r.GetVector(&blocks, kMaxBlocksPerTransfer) &&
         r.Get(&timeout_ms) && r.Get(&push_bytes);
}

void PutStatus(ByteWriter &w, const DetailedStatus &status) {
  w.Put<uint32_t>(status.code()).PutString(status.message());
  w.Put<uint32_t>(static_cast<uint32_t>(status.context().size()));
  for (const auto &kv : status.context()) w.PutString(kv.first).PutString(kv.second);
}

bool GetStatus(ByteReader &r, DetailedStatus *out) {
  uint32_t code = 0, n = 0;
  std::string message;
  if (!r.Get(&code) || !r.GetString(&message) || !r.Get(&n) || n > kMaxStatusContext) return false;
  DetailedStatus status(code, message);
  for (uint32_t i = 0; i < n; ++i) {
    std::string k, v;
    if (!r.GetString(&k) || !r.GetString(&v)) return false;
    if (k != "operation") status.With(k, v);
  }
  *out = std::move(status);
  return true;
}

std::vector<uint8_t> EncodeStatus(const DetailedStatus &status) {
  ByteWriter w;
  PutStatus(w, status);
  return w.bytes();
}

std::vector<uint8_t> PullReply::Encode() const {
  ByteWriter w;
  PutStatus(w, status);
  if (!status.ok()) return w.bytes();
  w.Put(owner_stride).Put(slot).Put<uint32_t>(static_cast<uint32_t>(tensors.size()));
  for (const DescribedTensor &t : tensors) w.Put(static_cast<uint8_t>(t.location)).Put(t.region_id).Put(t.value);
  w.Put<uint8_t>(needs_release);
  return w.bytes();
}

bool PullReply::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  if (!GetStatus(r, &status)) return false;
  if (!status.ok()) return true;
  uint32_t n = 0;
  if (!r.Get(&owner_stride) || !r.Get(&slot) || !r.Get(&n) || n > kMaxDescribedTensors) return false;
  if (r.remaining() / (2 + sizeof(uint64_t)) < n) return false;  // before allocating n entries
  tensors.resize(n);
  for (DescribedTensor &t : tensors)
    if (!GetEnum(r, static_cast<uint8_t>(Location::kUnreadable), &t.location) || !r.Get(&t.region_id) || !r.Get(&t.value))
      return false;
  return GetFlag(r, &needs_release);
}

std::vector<uint8_t> PushComplete::Encode() const {
  ByteWriter w;
  w.Put(push_request_id).Put<uint8_t>(success);
  return w.bytes();
}

bool PushComplete::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return r.Get(&push_request_id) && GetFlag(r, &success);
}

std::vector<uint8_t> ReleaseMessage::Encode() const {
  ByteWriter w;
  w.Put<uint8_t>(success);
  return w.bytes();
}

bool ReleaseMessage::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return GetLenientFlag(r, &success);
}

// ---- handshake ------------------------------------------------------------------------------

RegionAnnouncement RegionAnnouncement::Of(const LocalRegion &region) {
  RegionAnnouncement a;
  a.id = region.id;
  a.kind = region.kind;
  a.size = region.size;
  a.has_memfd = region.memfd >= 0;
  a.has_ipc = region.has_ipc;
  a.ipc_handle = region.ipc_handle;
  return a;
}

RemoteRegion RegionAnnouncement::ToRemote() const {
  RemoteRegion r;
  r.id = id;
  r.kind = kind;
  r.size = size;
  r.has_ipc = has_ipc;
  r.ipc_handle = ipc_handle;
  return r;
}

std::vector<uint8_t> HelloMessage::Encode() const {
  ByteWriter w;
  w.Put(client_id).Put(expected_server_id);
  PutNonce(w, nonce);
  w.Put<uint8_t>(has_secret);
  return w.bytes();
}

bool HelloMessage::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return r.Get(&client_id) && r.Get(&expected_server_id) && GetNonce(r, &nonce) &&
         GetLenientFlag(r, &has_secret);
}

std::vector<uint8_t> HelloReply::Encode() const {
  ByteWriter w;
  w.Put<uint32_t>(status).PutString(message);
  if (status != LLM_SUCCESS) return w.bytes();
  w.Put(server_id);
  PutNonce(w, nonce);
  w.Put<uint8_t>(has_secret);
  return w.bytes();
}

bool HelloReply::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  uint32_t code = 0;
  if (!r.Get(&code) || !r.GetString(&message)) return false;
  status = code;
  if (status != LLM_SUCCESS) return true;
  return r.Get(&server_id) && GetNonce(r, &nonce) && GetLenientFlag(r, &has_secret);
}

std::vector<uint8_t> AuthMessage::Encode() const {
  ByteWriter w;
  w.PutBytes(mac.data(), mac.size()).PutString(boot_id).Put(pid);
  PutRegions(w, regions);
  PutOffers(w, offers);
  return w.bytes();
}

bool AuthMessage::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return r.GetBytes(mac.data(), mac.size()) && r.GetString(&boot_id, kMaxBootIdBytes) && r.Get(&pid) &&
         GetRegions(r, &regions) && GetOffers(r, &offers);
}

std::vector<uint8_t> AuthReply::Encode() const {
  ByteWriter w;
  w.Put<uint32_t>(status).PutString(message);
  if (status != LLM_SUCCESS) return w.bytes();
  w.PutBytes(mac.data(), mac.size()).PutString(boot_id).Put(pid).PutString(unix_name);
  PutRegions(w, regions);
  PutOffers(w, offers);
  return w.bytes();
}

bool AuthReply::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  uint32_t code = 0;
  if (!r.Get(&code) || !r.GetString(&message)) return false;
  status = code;
  if (status != LLM_SUCCESS) return true;
  return r.GetBytes(mac.data(), mac.size()) && r.GetString(&boot_id, kMaxBootIdBytes) && r.Get(&pid) &&
         r.GetString(&unix_name, kMaxUnixNameBytes) && GetRegions(r, &regions) && GetOffers(r, &offers);
}

std::vector<uint8_t> ShmAbortMessage::Encode() const {
  ByteWriter w;
  w.PutString(reason);
  return w.bytes();
}

bool ShmAbortMessage::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  return r.GetString(&reason, kMaxShmAbortReason);
}

std::vector<uint8_t> LinkAck::Encode() const {
  ByteWriter w;
  w.Put<uint32_t>(status).PutString(message);
  w.Put(static_cast<uint8_t>(pools_mapped ? TransportKind::kShm : TransportKind::kTcp)).PutString(reason);
  w.Put<uint8_t>(frames_on_channel);
  return w.bytes();
}

bool LinkAck::Decode(const std::vector<uint8_t> &payload) {
  ByteReader r(payload);
  uint32_t code = 0;
  uint8_t transport = 0;
  if (!r.Get(&code) || !r.GetString(&message) || !r.Get(&transport) || !r.GetString(&reason) ||
      !GetLenientFlag(r, &frames_on_channel))
    return false;
  status = code;
  pools_mapped = transport == static_cast<uint8_t>(TransportKind::kShm);
  return true;
}

}  // namespace llm_datadist
