// SPDX-License-Identifier: Apache-2.0
// Links and transfers of DataDistEngine: the requester side of pulls and pushes, and the owner
// side that serves them. The owner checks every remote request against what it holds before a
// byte moves; the requester checks its own side before sending, and checks the owner's answer
// (offsets inside the regions it mapped) before reading.
//
// A transfer moves "chunks" in one canonical order that both sides compute independently:
// for each selected tensor, for each chunk of the layout:
//   kSlotToSlot     one chunk: `size` bytes at slot * stride
//   kBlocksToBlocks one chunk per block pair, block bytes each
//   kSlotToBlocks   the owner's slot cut into chunk_count chunks of the local block size
// Describe mode (the link has a one-sided transport): the owner answers where each selected
// tensor lives; the requester reads it through the link's transport that reaches it
// (transport/transport.h), then sends kRelease. Stream mode (none does, or a tensor is not
// reachable): the owner sends the chunks' bytes after its reply. Messages: link/messages.h.
// A complete slot pull consumes a req key on the owner at kRelease.
// Pushes mirror this: described when a transport of the link writes (ucx; protocol 6), the
// owner checking the request and answering where the destination lives, the requester writing
// it and then sending kPushComplete, which the owner answers; streamed otherwise, the requester
// sending the chunks' bytes with its request.
#include <algorithm>
#include <climits>

#include "common/logging.h"
#include "engine/copy_engine.h"
#include "engine/data_dist_engine.h"

namespace llm_datadist {

namespace {

struct Chunk {
  uint64_t offset;  // within the tensor
  uint64_t bytes;
};

// offset = a * b + c, or false when that does not fit 64 bits (a hostile peer's values).
bool OffsetOf(uint64_t a, uint64_t b, uint64_t c, uint64_t *offset) {
  uint64_t product = 0;
  return !__builtin_mul_overflow(a, b, &product) && !__builtin_add_overflow(product, c, offset);
}

// The chunks of one tensor in canonical order. False when an offset or an end does not fit 64
// bits: the owner checked every value of its own request before this (ResolveRequest), but a
// requester computes the owner's offsets from values the owner published (stride, block count).
bool ChunksOf(Layout layout, uint32_t slot, uint64_t stride, uint64_t size, const std::vector<uint64_t> &blocks,
              uint64_t chunk_bytes, uint32_t chunk_count, std::vector<Chunk> *chunks) {
  chunks->clear();
  uint64_t offset = 0, end = 0;
  switch (layout) {
    case Layout::kSlotToSlot:
      if (!OffsetOf(slot, stride, 0, &offset) || __builtin_add_overflow(offset, size, &end)) return false;
      chunks->push_back({offset, size});
      break;
    case Layout::kBlocksToBlocks:
      // `size`, when set, is the last chunk's byte count (a slot pushed into blocks that fills
      // its last block in part); the owner checked it is below the block size.
      if (size >= stride && size != 0) return false;
      chunks->reserve(blocks.size());
      for (size_t i = 0; i < blocks.size(); ++i) {
        const uint64_t bytes = (i + 1 == blocks.size() && size != 0) ? size : stride;
        if (!OffsetOf(blocks[i], stride, 0, &offset) || __builtin_add_overflow(offset, bytes, &end)) return false;
        chunks->push_back({offset, bytes});
      }
      break;
    case Layout::kSlotToBlocks: {
      uint64_t base = 0;
      if (!OffsetOf(slot, stride, 0, &base)) return false;
      chunks->reserve(chunk_count);
      for (uint32_t j = 0; j < chunk_count; ++j) {
        if (!OffsetOf(j, chunk_bytes, base, &offset) || __builtin_add_overflow(offset, chunk_bytes, &end)) return false;
        chunks->push_back({offset, chunk_bytes});
      }
      break;
    }
  }
  return true;
}

// The socket side of a streamed transfer over a cache's chunks (canonical order): spans to send
// or receive, with CUDA memory staged through host memory, which is all a socket can reach.
struct StreamSpans {
  std::vector<IoSpan> spans;
  std::vector<uint8_t> staging;       // moved with the struct: the spans stay valid
  std::vector<CopyRegion> to_staging;  // before a send: device -> staging
  std::vector<CopyRegion> to_device;   // after a receive: staging -> device
  uint64_t bytes = 0;
};

StreamSpans MakeStreamSpans(const CacheEntry &cache, uint32_t tensor_begin, uint32_t tensor_count,
                            const std::vector<Chunk> &chunks) {
  StreamSpans out;
  for (const Chunk &c : chunks) out.bytes += c.bytes;
  out.bytes *= tensor_count;
  const bool host = IsHostAddressable(cache.memory_kind);
  if (!host) out.staging.resize(out.bytes);
  uint64_t staged = 0;
  for (uint32_t t = tensor_begin; t < tensor_begin + tensor_count; ++t) {
    uint8_t *base = reinterpret_cast<uint8_t *>(cache.tensor_addrs[t]);
    for (const Chunk &c : chunks) {
      if (host) {
        out.spans.push_back({base + c.offset, c.bytes});
        continue;
      }
      uint8_t *stage = out.staging.data() + staged;
      out.spans.push_back({stage, c.bytes});
      out.to_staging.push_back({stage, base + c.offset, c.bytes});
      out.to_device.push_back({base + c.offset, stage, c.bytes});
      staged += c.bytes;
    }
  }
  return out;
}

std::string DescribeRemoteKey(const TransferRequest &w) {
  switch (w.key_kind) {
    case RemoteKeyKind::kCacheKey:
      if (w.prefix_id != kInvalidId)
        return detail::Concat("CacheKey(prefix_id=", w.prefix_id, ", model_id=", w.model_id, ")");
      return detail::Concat("CacheKey(req_id=", w.req_id, ", model_id=", w.model_id, ")");
    case RemoteKeyKind::kCacheIdAndIndex:
      return detail::Concat("CacheKeyByIdAndIndex(cache_id=", w.cache_id, ", batch_index=", w.batch_index, ")");
    case RemoteKeyKind::kBlocksKey:
      return detail::Concat("BlocksCacheKey(model_id=", w.model_id, ")");
    case RemoteKeyKind::kAddress:
      return detail::Concat("address ", w.blocks.empty() ? 0 : w.blocks[0]);
  }
  return "unknown key";
}

}  // namespace

DetailedStatus ParseIpPort(const std::string &text, std::string *ip, uint16_t *port) {
  const size_t colon = text.rfind(':');
  std::string host = colon == std::string::npos ? "" : text.substr(0, colon);
  const std::string port_text = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  bool digits = !port_text.empty() && port_text.size() <= 5;
  for (char c : port_text) digits = digits && c >= '0' && c <= '9';
  LLMDD_CHECK(!host.empty() && digits && std::stoul(port_text) <= 65535, LLM_PARAM_INVALID, "listen ip info \"",
              text, "\" is not \"ip:port\" (or \"[ipv6]:port\")");
  *ip = host;
  *port = static_cast<uint16_t>(std::stoul(port_text));
  return DetailedStatus::Ok();
}

// ---- links ----------------------------------------------------------------------------------

std::vector<LocalRegion> DataDistEngine::LocalRegions() { return local_regions_; }

DetailedStatus DataDistEngine::SwitchRole(LlmRole role, const std::string &listen_ip_info) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("switch_role"));
  const std::vector<uint64_t> linked = links_->linked_clusters();
  LLMDD_CHECK(linked.empty(), LLM_EXIST_LINK, linked.size(), " link(s) exist (first: cluster ", linked.front(),
              "); unlink every cluster before switch_role");
  if (listen_ip_info.empty()) {
    links_->StopListener();
  } else {
    std::string ip;
    uint16_t port = 0;
    LLMDD_RETURN_IF_ERROR(ParseIpPort(listen_ip_info, &ip, &port));
    LLMDD_CHECK(port != 0, LLM_PARAM_INVALID, "listen ip info \"", listen_ip_info, "\" has port 0; give the port peers link to");
    LLMDD_RETURN_IF_ERROR(links_->StartListener(ip, port));
  }
  options_.listen_ip_info = listen_ip_info;
  role_ = role;
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::EnsureListening(const std::string &ip, uint16_t port) {
  LLMDD_RETURN_IF_ERROR(CheckInitialized("link"));
  LLMDD_CHECK(port != 0, LLM_PARAM_INVALID, "the rank table gives this cluster port 0 at ", ip);
  const std::string current = links_->listen_address();
  const std::string wanted = detail::Concat(ip, ":", port);
  if (current.empty()) return links_->StartListener(ip, port);
  LLMDD_CHECK(current == wanted || current == detail::Concat("0.0.0.0:", port), LLM_PARAM_INVALID,
              "this cluster already listens at ", current, " but the rank table puts it at ", wanted);
  return DetailedStatus::Ok();
}

std::vector<DetailedStatus> DataDistEngine::LinkClusters(const std::vector<LinkTarget> &targets, int32_t timeout_ms) {
  if (!initialized_) return std::vector<DetailedStatus>(targets.size(), CheckInitialized("link_clusters"));
  return links_->LinkClusters(targets, timeout_ms);
}

std::vector<DetailedStatus> DataDistEngine::UnlinkClusters(const std::vector<uint64_t> &cluster_ids, int32_t timeout_ms,
                                                           bool force) {
  if (!initialized_) return std::vector<DetailedStatus>(cluster_ids.size(), CheckInitialized("unlink_clusters"));
  return links_->UnlinkClusters(cluster_ids, timeout_ms, force);
}

std::vector<uint64_t> DataDistEngine::LinkedClusters() const {
  return links_ ? links_->linked_clusters() : std::vector<uint64_t>{};
}

uint64_t DataDistEngine::LinksInstalled(uint64_t cluster_id) const {
  return links_ ? links_->links_installed(cluster_id) : 0;
}

std::string DataDistEngine::ListenAddress() const { return links_ ? links_->listen_address() : ""; }

std::optional<LinkInfo> DataDistEngine::GetLinkInfo(uint64_t cluster_id) const {
  if (!links_) return std::nullopt;
  std::shared_ptr<Link> link = links_->Find(cluster_id);
  if (!link) return std::nullopt;
  LinkInfo info;
  info.cluster_id = cluster_id;
  info.transport = TransportName(link->transport());
  info.reason = link->transport_reason();
  info.state = link->state() == Link::State::kActive ? "active" : "broken";
  info.broken_reason = link->state() == Link::State::kActive ? "" : link->close_reason();
  info.remote_address = link->remote_address();
  info.channel = link->frames_over_unix() ? "unix" : "tcp";
  info.peer_pid = link->peer_pid();
  info.cuda_ipc = link->PeerOffersCudaIpc();
  info.cuda_ipc_opened = link->CudaIpcOpened();
  info.millis_since_rx = link->millis_since_rx();
  const Metrics &m = link->metrics;
  info.bytes_pulled = m.Bytes(OpKind::kPullCache) + m.Bytes(OpKind::kPullBlocks);
  info.bytes_pushed = m.Bytes(OpKind::kPushCache) + m.Bytes(OpKind::kPushBlocks);
  info.bytes_served = m.Bytes(OpKind::kServePull) + m.Bytes(OpKind::kServePush);
  info.pulls = m.Operations(OpKind::kPullCache) + m.Operations(OpKind::kPullBlocks);
  info.pushes = m.Operations(OpKind::kPushCache) + m.Operations(OpKind::kPushBlocks);
  info.errors = m.Errors(OpKind::kPullCache) + m.Errors(OpKind::kPullBlocks) + m.Errors(OpKind::kPushCache) +
                m.Errors(OpKind::kPushBlocks);
  info.bytes_pushed_one_sided = link->counters.bytes_pushed_one_sided.load();
  info.data_bytes_sent = link->counters.data_bytes_sent.load();
  info.held = link->served_count();
  return info;
}

// ---- requester side -------------------------------------------------------------------------

DetailedStatus DataDistEngine::CheckTransfer(const TransferArgs &args, const char *operation,
                                             std::shared_ptr<CacheEntry> *local) const {
  LLMDD_RETURN_IF_ERROR(CheckInitialized(operation));
  LLMDD_CHECK(args.remote_cluster_id != cluster_id_, LLM_PARAM_INVALID, "the key names cluster ",
              args.remote_cluster_id, ", which is this cluster; ", operation, " moves data between clusters");
  *local = registry_.Find(args.local_cache_id);
  LLMDD_CHECK(*local != nullptr, LLM_KV_CACHE_NOT_EXIST, "local cache ", args.local_cache_id, " does not exist");
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::FindUsableLink(uint64_t remote_cluster_id, std::shared_ptr<Link> *link) const {
  *link = links_->Find(remote_cluster_id);
  LLMDD_CHECK(*link != nullptr, LLM_NOT_YET_LINK, "cluster ", remote_cluster_id, " is not linked; call link_clusters first");
  return (*link)->Usable();
}

namespace {

// The local half of a transfer: which local tensors, and the chunk list inside each.
struct LocalPlan {
  Layout layout = Layout::kSlotToSlot;
  uint32_t tensor_begin = 0, tensor_count = 0;
  std::vector<Chunk> chunks;
  TransferRequest wire;
};

// Resolves the layer ranges of a transfer (see LayerSelection) into the local tensors and the
// remote ones asked of the owner. Names are the API's: a pull's local side is dst_layer_range,
// a push's is src_layer_range.
DetailedStatus ResolveLayers(const LayerSelection &layers, const CacheEntry &local, bool push, LocalPlan *plan) {
  const char *local_name = push ? "src_layer_range" : "dst_layer_range";
  const char *remote_name = push ? "dst_layer_range" : "src_layer_range";
  const int64_t n = layers.tensor_num_per_layer;
  LLMDD_CHECK(n > 0 && n <= int64_t{UINT32_MAX}, LLM_PARAM_INVALID, "tensor_num_per_layer must be > 0, but got ", n);
  const uint64_t tensors = local.desc.num_tensors;
  const uint64_t num_layers = std::max<uint64_t>(1, (tensors + n - 1) / n);
  const bool has_local = layers.local_begin >= 0 || layers.local_end >= 0;
  const bool has_remote = layers.remote_begin >= 0 || layers.remote_end >= 0;
  plan->tensor_begin = 0;
  plan->tensor_count = static_cast<uint32_t>(tensors);
  if (has_local) {
    LLMDD_CHECK(layers.local_begin >= 0 && layers.local_end > layers.local_begin &&
                    static_cast<uint64_t>(layers.local_end) <= num_layers,
                LLM_PARAM_INVALID, local_name, " [", layers.local_begin, ", ", layers.local_end,
                ") is out of range: local cache ", local.cache_id, " has ", num_layers, " layer(s) of ", n,
                " tensor(s) (", tensors, " tensors)");
    const uint64_t begin = static_cast<uint64_t>(layers.local_begin) * n;
    const uint64_t end = std::min<uint64_t>(static_cast<uint64_t>(layers.local_end) * n, tensors);
    plan->tensor_begin = static_cast<uint32_t>(begin);
    plan->tensor_count = static_cast<uint32_t>(end - begin);
  }
  TransferRequest &w = plan->wire;
  if (!has_remote) {
    // The owner's whole cache, which must have as many tensors as the local selection.
    w.all_tensors = true;
    w.tensor_begin = 0;
    w.tensor_count = plan->tensor_count;
    return DetailedStatus::Ok();
  }
  LLMDD_CHECK(layers.remote_begin >= 0 && layers.remote_end > layers.remote_begin, LLM_PARAM_INVALID, remote_name,
              " [", layers.remote_begin, ", ", layers.remote_end, ") is not a valid range");
  const int64_t remote_layers = layers.remote_end - layers.remote_begin;
  const int64_t local_layers = has_local ? layers.local_end - layers.local_begin : static_cast<int64_t>(num_layers);
  LLMDD_CHECK(remote_layers == local_layers, LLM_PARAM_INVALID, remote_name, " [", layers.remote_begin, ", ",
              layers.remote_end, ") has ", remote_layers, " layer(s) and ", local_name,
              has_local ? " " : " (the whole local cache) ", local_layers);
  // Division, not multiplication: the core's callers are not only the checked Python side.
  LLMDD_CHECK(static_cast<uint64_t>(layers.remote_begin) <= (UINT32_MAX - uint64_t{plan->tensor_count}) / n,
              LLM_PARAM_INVALID, remote_name, " [", layers.remote_begin, ", ", layers.remote_end,
              ") x tensor_num_per_layer ", n, " is beyond any cache's tensors");
  const uint64_t remote_begin = static_cast<uint64_t>(layers.remote_begin) * n;
  w.all_tensors = false;
  w.tensor_begin = static_cast<uint32_t>(remote_begin);
  w.tensor_count = plan->tensor_count;
  return DetailedStatus::Ok();
}

// A push of one contiguous slot into remote blocks (upstream's transfer_cache_async from a cache
// to blocks): the slot is cut into pieces of the remote block size, piece j to remote block
// remote_blocks[j]; the last piece is shorter when the slot ends inside it. Upstream cuts the
// whole tensor from the slot's start and shortens the last piece named, even when it is not the
// slot's last; here pieces never leave the slot.
DetailedStatus PlanSlotIntoBlocks(const TransferArgs &args, const CacheEntry &local, LocalPlan *plan) {
  const uint64_t block = args.remote_block_bytes, stride = local.stride;
  const uint64_t local_slots = static_cast<uint64_t>(local.desc.shape[0]);
  LLMDD_CHECK(!local.is_blocks || local.is_registered || local.mixed, LLM_PARAM_INVALID,
              "a push into remote blocks by dst_block_memory_size needs a contiguous source, but cache ",
              local.cache_id, " is a blocks cache (push blocks to blocks instead)");
  LLMDD_CHECK(block > 0 && block < stride, LLM_PARAM_INVALID, "dst_block_memory_size ", block,
              " must be > 0 and smaller than a slot of the source (", stride, " bytes of cache ", local.cache_id, ")");
  LLMDD_CHECK(args.local_batch_index < local_slots, LLM_PARAM_INVALID, "batch_index ", args.local_batch_index,
              " is out of range [0, ", local_slots, ") of local cache ", local.cache_id);
  LLMDD_CHECK(!args.remote_blocks.empty(), LLM_PARAM_INVALID, "dst_block_indices must not be empty");
  const uint64_t pieces = stride / block + (stride % block != 0);
  LLMDD_CHECK(args.remote_blocks.size() <= pieces, LLM_PARAM_INVALID, "the slot of ", stride, " bytes cut into blocks of ",
              block, " bytes gives ", pieces, " blocks, fewer than the ", args.remote_blocks.size(),
              " dst_block_indices");
  TransferRequest &w = plan->wire;
  plan->layout = Layout::kBlocksToBlocks;
  w.blocks = args.remote_blocks;
  w.chunk_bytes = block;
  const uint64_t base = uint64_t{args.local_batch_index} * stride;
  plan->chunks.clear();
  for (uint64_t j = 0; j < args.remote_blocks.size(); ++j)
    plan->chunks.push_back({base + j * block, std::min(block, stride - j * block)});
  const uint64_t last = plan->chunks.back().bytes;
  w.size = last == block ? 0 : last;
  w.layout = plan->layout;
  return DetailedStatus::Ok();
}

// Builds the plan for the local cache (the destination of a pull, the source of a push) and
// the owner-side request.
DetailedStatus PlanTransfer(const TransferArgs &args, const CacheEntry &local, bool push, LocalPlan *plan) {
  const char *op = push ? (args.blocks_api ? "push_blocks" : "push_cache") : (args.blocks_api ? "pull_blocks" : "pull_cache");
  TransferRequest &w = plan->wire;
  w.key_kind = args.key_kind;
  w.req_id = args.key.req_id;
  w.prefix_id = args.key.prefix_id;
  w.model_id = args.key_kind == RemoteKeyKind::kBlocksKey ? args.blocks_model_id : args.key.model_id;
  w.cache_id = args.remote_cache_id;
  w.batch_index = args.remote_batch_index;
  if (args.key_kind == RemoteKeyKind::kCacheKey) {
    const bool req = args.key.req_id != kInvalidId, prefix = args.key.prefix_id != kInvalidId;
    LLMDD_CHECK(req != prefix, LLM_PARAM_INVALID, "CacheKey(cluster_id=", args.key.cluster_id, ", req_id=",
                args.key.req_id, ", model_id=", args.key.model_id, ", prefix_id=", args.key.prefix_id,
                ") must have exactly one of req_id and prefix_id set.");
  }
  LLMDD_RETURN_IF_ERROR(ResolveLayers(args.layers, local, push, plan));
  const uint64_t local_slots = static_cast<uint64_t>(local.desc.shape[0]);
  if (!args.blocks_api && push && args.key_kind == RemoteKeyKind::kBlocksKey) return PlanSlotIntoBlocks(args, local, plan);
  if (!args.blocks_api) {
    // (a push by address sends one slot, which may be a block of a blocks cache: upstream's
    // TransferConfig with block indices)
    LLMDD_CHECK(!local.is_blocks || local.is_registered || local.mixed || args.key_kind == RemoteKeyKind::kAddress,
                LLM_PARAM_INVALID, op, " needs a contiguous local cache, but cache ",
                local.cache_id, " is a blocks cache (use ", push ? "push_blocks" : "pull_blocks", ")");
    LLMDD_CHECK(args.key_kind != RemoteKeyKind::kBlocksKey, LLM_PARAM_INVALID, op,
                " takes a CacheKey or CacheKeyByIdAndIndex, not a BlocksCacheKey");
    if (args.key_kind == RemoteKeyKind::kAddress) {
      LLMDD_CHECK(push && args.remote_blocks.size() == 1 && plan->tensor_count == 1, LLM_PARAM_INVALID,
                  "a destination address names one tensor slot of a push; got ", args.remote_blocks.size(),
                  " addresses for ", plan->tensor_count, " tensors", push ? "" : " in a pull");
      w.blocks = args.remote_blocks;
    }
    LLMDD_CHECK(args.local_batch_index < local_slots, LLM_PARAM_INVALID, push ? "src_batch_index " : "batch_index ",
                args.local_batch_index, " is out of range [0, ", local_slots, ").");
    LLMDD_CHECK(args.size == -1 || args.size > 0, LLM_PARAM_INVALID, "size must be -1 or > 0, but got ", args.size, ".");
    const uint64_t size = args.size == -1 ? local.stride : static_cast<uint64_t>(args.size);
    LLMDD_CHECK(size <= local.stride, LLM_PARAM_INVALID, "size ", size, " is larger than a batch slot of ", local.stride,
                " bytes of local cache ", local.cache_id);
    LLMDD_CHECK(args.local_offset == 0 || args.key_kind == RemoteKeyKind::kAddress, LLM_PARAM_INVALID,
                "a local offset is for pushes by address only");
    LLMDD_CHECK(args.local_offset <= local.stride - size, LLM_PARAM_INVALID, "offset ", args.local_offset, " + size ",
                size, " is past a batch slot of ", local.stride, " bytes of local cache ", local.cache_id);
    plan->layout = Layout::kSlotToSlot;
    w.size = size;
    w.whole_slot = args.size == -1;
    plan->chunks = {{uint64_t{args.local_batch_index} * local.stride + args.local_offset, size}};
  } else {
    // The Python API's messages (cache_manager.py checks none of these).
    if (push) {
      LLMDD_CHECK(local.is_blocks || local.mixed, LLM_PARAM_INVALID, "push_blocks needs a blocks src_cache, but cache ",
                  local.cache_id, " is contiguous.");
      LLMDD_CHECK(!args.local_blocks.empty() && args.local_blocks.size() == args.remote_blocks.size(),
                  LLM_PARAM_INVALID, "src_blocks (", args.local_blocks.size(), ") and dst_blocks (",
                  args.remote_blocks.size(), ") must be non-empty and of equal length.");
    } else {
      LLMDD_CHECK(local.is_blocks || local.mixed, LLM_PARAM_INVALID, "pull_blocks needs a blocks cache, but dst_cache (cache_id ",
                  local.cache_id, ") is contiguous; use pull_cache.");
      LLMDD_CHECK(!args.local_blocks.empty(), LLM_PARAM_INVALID, "dst_blocks must not be empty.");
      LLMDD_CHECK(args.key_kind != RemoteKeyKind::kBlocksKey || args.remote_blocks.size() == args.local_blocks.size(),
                  LLM_PARAM_INVALID, "src_blocks has ", args.remote_blocks.size(), " entries and dst_blocks ",
                  args.local_blocks.size(), "; they must be equal.");
    }
    LLMDD_CHECK(args.local_blocks.size() <= kMaxBlocksPerTransfer, LLM_PARAM_INVALID, push ? "src_blocks" : "dst_blocks",
                " has ", args.local_blocks.size(), " entries; one transfer moves at most ", kMaxBlocksPerTransfer,
                " blocks");
    for (size_t i = 0; i < args.local_blocks.size(); ++i)
      LLMDD_CHECK(args.local_blocks[i] < local_slots, LLM_PARAM_INVALID, push ? "src_blocks[" : "dst_blocks[", i,
                  "] = ", args.local_blocks[i], " is out of range [0, ", local_slots, ") of local cache ", local.cache_id);
    // A BlocksCacheKey, or (upstream C++ PullKvBlocks) a remote blocks cache named by its id.
    const bool remote_blocks = args.key_kind == RemoteKeyKind::kBlocksKey ||
                               (args.key_kind == RemoteKeyKind::kCacheIdAndIndex && !args.remote_blocks.empty());
    if (remote_blocks) {
      LLMDD_CHECK(!args.remote_blocks.empty(), LLM_PARAM_INVALID, push ? "dst_blocks" : "src_blocks",
                  " must not be empty with a BlocksCacheKey");
      LLMDD_CHECK(args.remote_blocks.size() == args.local_blocks.size(), LLM_PARAM_INVALID, "src_blocks has ",
                  push ? args.local_blocks.size() : args.remote_blocks.size(), " entries and dst_blocks ",
                  push ? args.remote_blocks.size() : args.local_blocks.size(), "; they must be equal");
      plan->layout = Layout::kBlocksToBlocks;
      w.blocks = args.remote_blocks;
      w.chunk_bytes = local.stride;
    } else {
      LLMDD_CHECK(!push, LLM_PARAM_INVALID, "push_blocks takes a BlocksCacheKey");
      LLMDD_CHECK(args.remote_blocks.empty(), LLM_PARAM_INVALID,
                  "src_blocks must be empty when pulling a remote contiguous cache into blocks, got ",
                  args.remote_blocks.size(), " entries");
      plan->layout = Layout::kSlotToBlocks;
      w.chunk_bytes = local.stride;
      w.chunk_count = static_cast<uint32_t>(args.local_blocks.size());
    }
    plan->chunks.reserve(args.local_blocks.size());
    for (uint64_t b : args.local_blocks) plan->chunks.push_back({b * local.stride, local.stride});
  }
  w.layout = plan->layout;
  return DetailedStatus::Ok();
}

// The owner-side checks of a blocks selection, shared by the owner (two-sided) and by a
// requester resolving through the published table (one-sided), so both fail the same way.
DetailedStatus CheckTensorSelection(const TransferRequest &w, const std::string &key, uint32_t num_tensors) {
  if (w.all_tensors) {
    LLMDD_CHECK(w.tensor_count == num_tensors, LLM_PARAM_INVALID, "num_tensors differ: the remote cache (", key, ") has ",
                num_tensors, " tensors, the local one ", w.tensor_count);
    LLMDD_CHECK(w.tensor_begin == 0, LLM_PARAM_INVALID, "a request for all tensors of ", key, " starts at tensor ",
                w.tensor_begin, ", not 0");
  }
  // Always, whatever all_tensors says: every tensor the owner touches comes from this range.
  LLMDD_CHECK(uint64_t{w.tensor_begin} + w.tensor_count <= num_tensors, LLM_PARAM_INVALID, "remote tensors [",
              w.tensor_begin, ", ", uint64_t{w.tensor_begin} + w.tensor_count, ") are out of range: ", key, " has ",
              num_tensors, " tensors");
  return DetailedStatus::Ok();
}

DetailedStatus CheckBlocksSelection(const TransferRequest &w, const std::string &key, uint32_t num_tensors, uint64_t stride,
                                    uint64_t num_blocks) {
  LLMDD_RETURN_IF_ERROR(CheckTensorSelection(w, key, num_tensors));
  LLMDD_CHECK(w.chunk_bytes == stride, LLM_PARAM_INVALID, "block bytes differ: remote ", stride, ", local ", w.chunk_bytes);
  LLMDD_CHECK(w.size < stride, LLM_PARAM_INVALID, "the last block's ", w.size, " bytes exceed a block of ", stride,
              " bytes of ", key);
  for (size_t i = 0; i < w.blocks.size(); ++i)
    LLMDD_CHECK(w.blocks[i] < num_blocks, LLM_PARAM_INVALID, "remote block index ", w.blocks[i], " (position ", i,
                ") is out of range [0, ", num_blocks, ") of ", key);
  return DetailedStatus::Ok();
}

// The owner-side checks of a slot selection (kSlotToSlot, kSlotToBlocks) against a slot of
// `stride` bytes, shared like CheckBlocksSelection (after CheckTensorSelection).
DetailedStatus CheckSlotSelection(const TransferRequest &w, const std::string &key, uint64_t stride) {
  if (w.layout == Layout::kSlotToSlot) {
    LLMDD_CHECK(w.size <= stride, LLM_PARAM_INVALID, "size ", w.size, " is larger than the remote slot of ", stride,
                " bytes (", key, ")");
    LLMDD_CHECK(!w.whole_slot || w.size == stride, LLM_PARAM_INVALID, "slot sizes differ: remote ", stride,
                " bytes, local ", w.size, " bytes; pass an explicit size");
  } else {
    // Division, not multiplication: chunk_count * chunk_bytes can wrap 64 bits.
    LLMDD_CHECK(w.chunk_bytes > 0 && w.chunk_count > 0, LLM_PARAM_INVALID, w.chunk_count, " blocks of ", w.chunk_bytes,
                " bytes is not a destination (", key, ")");
    LLMDD_CHECK(w.chunk_count <= kMaxBlocksPerTransfer && w.chunk_count <= stride / w.chunk_bytes, LLM_PARAM_INVALID,
                w.chunk_count, " blocks of ", w.chunk_bytes, " bytes do not fit the remote slot of ", stride, " bytes (",
                key, ")");
  }
  return DetailedStatus::Ok();
}

// A peer heard from within this long is alive enough for one-sided reads (heartbeats come
// every kHeartbeatIntervalMs).
constexpr int64_t kPeerSilentMs = 4 * kHeartbeatIntervalMs;

// Which way a described transfer moves: a pull reads the owner's memory, a push writes it.
enum class Access : uint8_t { kRead, kWrite };

// Copies the plan's chunks between local memory and where the owner's selected tensors live
// (its answer, or its published table), each through the link's transport that reaches it (a
// pool mapped read-only, a CUDA pool opened over IPC, registered host memory by address; for
// writes, a transport that writes: ucx).
// LLM_FEATURE_NOT_ENABLED when some tensor is not reachable from here (the caller streams
// instead); LLM_LINK_FAILED (and the link broken) when the owner described memory outside what
// it shared.
DetailedStatus MoveDescribed(Link &link, const CacheEntry &local, const LocalPlan &plan,
                             const std::vector<DescribedTensor> &tensors, uint64_t owner_stride, uint32_t slot,
                             Deadline deadline, Access access = Access::kRead) {
  const bool write = access == Access::kWrite;
  const char *unreachable = write ? " of the owner is not writable from here" : " of the owner is not readable from here";
  LLMDD_CHECK(tensors.size() == plan.tensor_count, LLM_FEATURE_NOT_ENABLED, "owner described ", tensors.size(),
              " tensors, expected ", plan.tensor_count);
  std::vector<Chunk> src_chunks;
  if (!ChunksOf(plan.layout, slot, owner_stride, plan.wire.size, plan.wire.blocks, plan.wire.chunk_bytes,
                plan.wire.chunk_count, &src_chunks)) {
    link.Break("the peer described memory outside its pools");
    return DetailedStatus(LLM_LINK_FAILED, "the peer described memory outside its pools; the link is broken");
  }
  uint64_t extent = 0;  // ChunksOf checked that every end fits 64 bits
  for (const Chunk &c : src_chunks) extent = std::max(extent, c.offset + c.bytes);
  // One batch per transport, in the order the transports first appear (a raw-address batch is
  // last, as it is the one most likely to be refused part-way).
  std::vector<std::pair<Transport *, std::vector<RemoteSpan>>> batches;
  for (uint32_t t = 0; t < plan.tensor_count; ++t) {
    RemoteMemory where;
    const DescribedTensor &described = tensors[t];
    if (described.location == Location::kRegion) {
      const RemoteRegion *region = link.RemotePool(described.region_id);
      if (region == nullptr || described.value > region->size || extent > region->size - described.value) {
        link.Break("the peer described memory outside its pools");
        return DetailedStatus(LLM_LINK_FAILED, "the peer described memory outside its pools; the link is broken");
      }
      where = RemoteMemory::Region(described.region_id);
    } else if (described.location == Location::kRawHost) {
      where = RemoteMemory::RawHost();
    } else {
      return DetailedStatus(LLM_FEATURE_NOT_ENABLED, detail::Concat("tensor ", t, unreachable));
    }
    Transport *transport = write ? link.WriterFor(where, local.memory_kind) : link.TransportFor(where, local.memory_kind);
    LLMDD_CHECK(transport != nullptr, LLM_FEATURE_NOT_ENABLED, "tensor ", t, unreachable);
    auto batch = std::find_if(batches.begin(), batches.end(), [&](const auto &b) { return b.first == transport; });
    if (batch == batches.end()) batch = batches.insert(batches.end(), {transport, {}});
    uint8_t *dst_base = reinterpret_cast<uint8_t *>(local.tensor_addrs[plan.tensor_begin + t]);
    for (size_t c = 0; c < plan.chunks.size(); ++c)
      batch->second.push_back(
          {where, described.value + src_chunks[c].offset, dst_base + plan.chunks[c].offset, plan.chunks[c].bytes});
  }
  std::stable_partition(batches.begin(), batches.end(), [](const auto &b) { return !b.first->caps().registered_host; });
  for (const auto &batch : batches) {
    DetailedStatus read = write ? batch.first->Write(batch.second, local.memory_kind, deadline)
                                : batch.first->Read(batch.second, local.memory_kind, deadline);
    if (read.code() == LLM_TIMEOUT || read.code() == LLM_LINK_FAILED) {
      // The transport's own connection to the peer is gone (ucx closes its endpoint past a
      // deadline, so that no late byte lands): the link is broken, and relinked like after a
      // control-plane timeout.
      link.Break(detail::Concat(batch.first->name(), write ? " write failed: " : " read failed: ", read.message()));
      DetailedStatus broken(read.code(), read.message() + "; the link is broken until unlinked and linked again");
      for (const auto &[k, v] : read.context()) broken.With(k, v);
      broken.With("remote_cluster_id", link.peer_cluster_id());
      if (read.code() == LLM_LINK_FAILED) broken.With("action", "relink");
      return broken;
    }
    LLMDD_RETURN_IF_ERROR(read);
  }
  return DetailedStatus::Ok();
}

}  // namespace

namespace {

// A pull resolved through the owner's published table and read one-sided: by a BlocksCacheKey,
// or by a prefix CacheKey (the keys no pull consumes; a req key's pull stays two-sided, where the
// owner consumes it). nullopt: the pull goes two-sided after all (the key is not published, some
// tensor is not readable from here, or the key moved while it was read).
std::optional<DetailedStatus> PullPublished(Link &link, const CacheEntry &local, const LocalPlan &plan,
                                            const TransferArgs &args, Deadline deadline) {
  TableKey key;
  if (plan.layout == Layout::kBlocksToBlocks && args.key_kind == RemoteKeyKind::kBlocksKey) {
    key = TableKey::Blocks(args.blocks_model_id);
  } else if (plan.layout != Layout::kBlocksToBlocks && args.key_kind == RemoteKeyKind::kCacheKey && args.key.is_prefix()) {
    key = TableKey::Prefix(args.key.prefix_id, args.key.model_id);
  } else {
    return std::nullopt;
  }
  std::optional<TableEntry> entry = link.LookupPublished(key);
  if (!entry) return std::nullopt;
  // The owner's checks, failing as the owner would. The key's description only for an error:
  // formatting it cost more than the checks.
  const TransferRequest &w = plan.wire;
  const auto num_tensors = static_cast<uint32_t>(entry->tensors.size());
  auto check = [&](const std::string &described) {
    if (key.kind == TableKeyKind::kBlocks)
      return CheckBlocksSelection(w, described, num_tensors, entry->stride, entry->num_blocks);
    DetailedStatus tensors = CheckTensorSelection(w, described, num_tensors);
    return tensors.ok() ? CheckSlotSelection(w, described, entry->stride) : tensors;
  };
  if (!check(std::string()).ok()) return check(DescribeRemoteKey(w));
  std::vector<DescribedTensor> tensors(plan.tensor_count);
  for (uint32_t t = 0; t < plan.tensor_count; ++t) {
    tensors[t].location = entry->location == TableLocation::kRegion ? Location::kRegion : Location::kRawHost;
    tensors[t].region_id = entry->region_id;
    tensors[t].value = entry->tensors[w.tensor_begin + t];
  }
  DetailedStatus copied = MoveDescribed(link, local, plan, tensors, entry->stride, entry->slot, deadline);
  if (copied.code() == LLM_FEATURE_NOT_ENABLED) return std::nullopt;  // e.g. CMA refused: ask the owner
  if (!copied.ok()) return copied;
  // The owner unpublishes a key before the memory it names may be freed: a key that still names
  // the cache (and slot) it named before the read means the bytes read were that cache's.
  std::optional<TableEntry> after = link.LookupPublished(key);
  if (!after || after->cache_id != entry->cache_id || after->slot != entry->slot) return std::nullopt;
  return DetailedStatus::Ok();
}

}  // namespace

DetailedStatus DataDistEngine::PullUnmetered(const TransferArgs &args, TransferOutcome *outcome) {
  const char *op = args.blocks_api ? "pull_blocks" : "pull_cache";
  const Deadline deadline = DeadlineIn(options_.sync_kv_timeout_ms);
  std::shared_ptr<Link> &link = outcome->link;
  std::shared_ptr<CacheEntry> local;
  LLMDD_RETURN_IF_ERROR(CheckTransfer(args, op, &local));
  LocalPlan plan;
  LLMDD_RETURN_IF_ERROR(PlanTransfer(args, *local, false, &plan));
  LLMDD_RETURN_IF_ERROR(FindUsableLink(args.remote_cluster_id, &link));
  const uint64_t chunk_total = [&] {
    uint64_t t = 0;
    for (const Chunk &c : plan.chunks) t += c.bytes;
    return t * plan.tensor_count;
  }();
  outcome->bytes = chunk_total;
  auto fail = [&](DetailedStatus status) { return status.With("remote_cluster_id", args.remote_cluster_id); };

  // Owner-streamed when no transport of the link reads one-sided; else described, and streamed
  // after all when some tensor turns out not readable from here.
  bool stream = !link->HasOneSided();
  // One-sided: a key the owner publishes, resolved through its table and read straight from its
  // pools, no round trip. Only while the owner is alive and talking (a frozen owner falls
  // through to the two-sided path, which reports LLM_TIMEOUT).
  if (!stream && link->millis_since_rx() < kPeerSilentMs) {
    if (std::optional<DetailedStatus> done = PullPublished(*link, *local, plan, args, deadline)) {
      if (done->ok()) return DetailedStatus::Ok();
      return fail(done->With("operation", op));
    }
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    plan.wire.delivery = stream ? Delivery::kStream : Delivery::kDescribe;
    auto call = std::make_shared<PendingCall>();
    StreamSpans receive;  // stream mode: where the owner's bytes land
    if (stream) {
      receive = MakeStreamSpans(*local, plan.tensor_begin, plan.tensor_count, plan.chunks);
      call->recv_spans = receive.spans;
      call->recv_bytes = receive.bytes;
    }
    plan.wire.timeout_ms = static_cast<uint32_t>(std::min<int64_t>(options_.sync_kv_timeout_ms, kMaxServeTimeoutMs));
    DetailedStatus called = link->Call(FrameType::kPullRequest, plan.wire.Encode(), {}, call, deadline);
    if (!called.ok()) return fail(called);
    const uint64_t request_id = call->reply_header.request_id;
    PullReply reply;
    if (!reply.Decode(call->reply)) {
      link->Break("malformed pull reply");
      return fail(DetailedStatus(LLM_LINK_FAILED, "malformed pull reply from the peer; the link is broken"));
    }
    if (!reply.status.ok()) return fail(reply.status);
    auto release = [&](bool success) {
      if (!reply.needs_release) return;
      ReleaseMessage message;
      message.success = success;
      // Best effort: a release that cannot be sent means the link is going, and the owner
      // releases what it pinned for this link when it goes.
      (void)link->Send(FrameType::kRelease, request_id, message.Encode(), {}, 0, deadline);
    };
    if (stream) {
      DetailedStatus copied = CopyRegions(receive.to_device, local->memory_kind, MemoryKind::kHost);
      release(copied.ok());
      if (!copied.ok()) return fail(copied);
      return DetailedStatus::Ok();
    }
    // Describe mode: check the owner's answer against what we mapped, then copy.
    if (plan.layout == Layout::kSlotToBlocks && plan.wire.chunk_bytes > 0 &&
        plan.wire.chunk_count > reply.owner_stride / plan.wire.chunk_bytes) {
      release(false);
      return fail(DetailedStatus(LLM_PARAM_INVALID, "remote slot is smaller than the destination blocks"));
    }
    DetailedStatus copied =
        MoveDescribed(*link, *local, plan, reply.tensors, reply.owner_stride, reply.slot, deadline);
    if (copied.code() == LLM_FEATURE_NOT_ENABLED) {  // not readable from here: stream it instead
      LLMDD_LOG(kDebug, "pull from cluster ", args.remote_cluster_id, ": ", copied.message(), "; streaming");
      release(false);
      stream = true;
      continue;
    }
    release(copied.ok());
    if (!copied.ok()) return fail(copied.With("operation", op));
    return DetailedStatus::Ok();
  }
  return fail(DetailedStatus(LLM_FAILED, "internal: pull did not settle on a transport"));
}

namespace {

// A push written one-sided: the owner checks the request and describes the destination (holding
// it), this side checks the description against what it mapped, writes every chunk through the
// link's transport that writes there (flushed to the owner's memory), then tells the owner it is
// done and waits for its answer. LLM_FEATURE_NOT_ENABLED when the owner will not describe it or
// some tensor is not writable from here: nothing was pushed that a streamed push would not
// overwrite, and the caller streams it instead.
DetailedStatus PushDescribed(Link &link, const CacheEntry &local, LocalPlan &plan, uint64_t total, Deadline deadline) {
  plan.wire.delivery = Delivery::kDescribe;
  plan.wire.push_bytes = total;
  auto call = std::make_shared<PendingCall>();
  LLMDD_RETURN_IF_ERROR(link.Call(FrameType::kPushRequest, plan.wire.Encode(), {}, call, deadline));
  const uint64_t request_id = call->reply_header.request_id;
  PushDescribeReply reply;
  if (!reply.Decode(call->reply) || (reply.status.ok() && !reply.needs_release)) {
    link.Break("malformed push reply");
    return DetailedStatus(LLM_LINK_FAILED, "malformed push reply from the peer; the link is broken");
  }
  if (!reply.status.ok()) {  // a refusal holds nothing on the owner
    // Only the owner's refusal of described pushes on this link says FEATURE_NOT_ENABLED: the
    // next pushes stream at once instead of asking again.
    if (reply.status.code() == LLM_FEATURE_NOT_ENABLED) link.PeerRefusedDescribedPush();
    return reply.status;
  }
  DetailedStatus written =
      MoveDescribed(link, local, plan, reply.tensors, reply.owner_stride, reply.slot, deadline, Access::kWrite);
  // A broken link (the write timed out, the peer went): the owner drops its hold as the link goes.
  if (!written.ok() && link.state() != Link::State::kActive) return written;
  PushComplete done;
  done.push_request_id = request_id;
  done.success = written.ok();
  auto ack = std::make_shared<PendingCall>();
  LLMDD_RETURN_IF_ERROR(link.Call(FrameType::kPushComplete, done.Encode(), {}, ack, deadline));
  ByteReader r(ack->reply);
  DetailedStatus acknowledged;
  if (!GetStatus(r, &acknowledged)) {
    link.Break("malformed push reply");
    return DetailedStatus(LLM_LINK_FAILED, "malformed push reply from the peer; the link is broken");
  }
  return written.ok() ? acknowledged : written;
}

}  // namespace

DetailedStatus DataDistEngine::PushUnmetered(const TransferArgs &args, TransferOutcome *outcome) {
  const char *op = args.blocks_api ? "push_blocks" : "push_cache";
  const Deadline deadline = DeadlineIn(options_.sync_kv_timeout_ms);
  std::shared_ptr<Link> &link = outcome->link;
  std::shared_ptr<CacheEntry> local;
  LLMDD_RETURN_IF_ERROR(CheckTransfer(args, op, &local));
  LLMDD_CHECK(args.key_kind != RemoteKeyKind::kCacheKey, LLM_PARAM_INVALID, op,
              " addresses the remote cache by CacheKeyByIdAndIndex or BlocksCacheKey, not CacheKey");
  LocalPlan plan;
  LLMDD_RETURN_IF_ERROR(PlanTransfer(args, *local, true, &plan));
  LLMDD_RETURN_IF_ERROR(FindUsableLink(args.remote_cluster_id, &link));
  plan.wire.timeout_ms = static_cast<uint32_t>(std::min<int64_t>(options_.sync_kv_timeout_ms, kMaxServeTimeoutMs));
  uint64_t total = 0;
  for (const Chunk &c : plan.chunks) total += c.bytes;
  total *= plan.tensor_count;
  // One-sided when a transport of the link writes the owner's memory; streamed (the owner
  // receives the bytes and writes them itself) otherwise, or when the owner or a tensor says no.
  if (link->HasWriter() && link->PeerDescribesPushes()) {
    DetailedStatus pushed = PushDescribed(*link, *local, plan, total, deadline);
    if (pushed.ok()) {
      outcome->bytes = total;
      link->counters.bytes_pushed_one_sided.fetch_add(total);
      return DetailedStatus::Ok();
    }
    if (pushed.code() != LLM_FEATURE_NOT_ENABLED) return pushed.With("remote_cluster_id", args.remote_cluster_id);
    LLMDD_LOG(kDebug, "push to cluster ", args.remote_cluster_id, ": ", pushed.message(), "; streaming");
    plan.wire.push_bytes = 0;
  }
  plan.wire.delivery = Delivery::kStream;
  StreamSpans send = MakeStreamSpans(*local, plan.tensor_begin, plan.tensor_count, plan.chunks);
  outcome->bytes = send.bytes;
  LLMDD_RETURN_IF_ERROR(CopyRegions(send.to_staging, MemoryKind::kHost, local->memory_kind));
  auto call = std::make_shared<PendingCall>();
  DetailedStatus called = link->Call(FrameType::kPushRequest, plan.wire.Encode(), send.spans, call, deadline);
  if (!called.ok()) return called.With("remote_cluster_id", args.remote_cluster_id);
  ByteReader reply(call->reply);
  DetailedStatus status;
  if (!GetStatus(reply, &status)) {
    link->Break("malformed push reply");
    return DetailedStatus(LLM_LINK_FAILED, "malformed push reply from the peer; the link is broken");
  }
  if (!status.ok()) return status.With("remote_cluster_id", args.remote_cluster_id);
  return DetailedStatus::Ok();
}

// ---- owner side -----------------------------------------------------------------------------

namespace {

struct Resolved {
  std::shared_ptr<CacheEntry> entry;
  uint32_t slot = 0;
  std::vector<Chunk> chunks;
  bool consumes = false;
};

}  // namespace

DetailedStatus DataDistEngine::OnPeerFrame(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) {
  switch (static_cast<FrameType>(header.type)) {
    case FrameType::kPullRequest: return ServePull(link, header, payload);
    case FrameType::kPushRequest: return ServePush(link, header, payload);
    case FrameType::kRelease: return ServeRelease(link, header, payload);
    case FrameType::kPushComplete: return ServePushComplete(link, header, payload);
    default:
      return DetailedStatus(LLM_LINK_FAILED, detail::Concat("unexpected frame type ", header.type, " from the peer"));
  }
}

namespace {

// Resolves and checks an owner-side request against the registry. Every failure names values.
// `block_as_slot`: a push by address may name one block of a blocks cache as its slot (upstream's
// TransferConfig with block indices: tensor base address + block * block bytes).
DetailedStatus ResolveRequest(const CacheRegistry &registry, uint64_t cluster_id, const TransferRequest &w, Resolved *out,
                              bool block_as_slot = false) {
  const std::string key = DescribeRemoteKey(w);
  std::shared_ptr<CacheEntry> entry;
  uint32_t slot = 0;
  switch (w.key_kind) {
    case RemoteKeyKind::kCacheKey: {
      CacheKeySpec spec{cluster_id, w.req_id, w.model_id, w.prefix_id};
      std::optional<KeySlot> found = registry.FindKey(spec);
      LLMDD_CHECK(found.has_value(), LLM_KV_CACHE_NOT_EXIST, "cluster ", cluster_id, " has no ", key,
                  " (never bound, already pulled, or removed)");
      entry = registry.Find(found->cache_id);
      slot = found->batch_index;
      break;
    }
    case RemoteKeyKind::kCacheIdAndIndex:
      entry = registry.Find(w.cache_id);
      LLMDD_CHECK(entry != nullptr, LLM_KV_CACHE_NOT_EXIST, "cluster ", cluster_id, " has no cache ", w.cache_id);
      LLMDD_CHECK(w.batch_index < static_cast<uint64_t>(entry->desc.shape[0]), LLM_KV_CACHE_NOT_EXIST, "cache ",
                  w.cache_id, " of cluster ", cluster_id, " has ", entry->desc.shape[0], " slots, no batch_index ",
                  w.batch_index);
      slot = w.batch_index;
      break;
    case RemoteKeyKind::kBlocksKey: {
      std::optional<int64_t> id = registry.FindBlocksKey(w.model_id);
      LLMDD_CHECK(id.has_value(), LLM_KV_CACHE_NOT_EXIST, "cluster ", cluster_id, " has no ", key);
      entry = registry.Find(*id);
      break;
    }
    case RemoteKeyKind::kAddress:  // pushes resolve it first (AddressToSlot): this is a pull
      return DetailedStatus(LLM_PARAM_INVALID, "a pull cannot name its source by address");
  }
  LLMDD_CHECK(entry != nullptr, LLM_KV_CACHE_NOT_EXIST, "cluster ", cluster_id, " has no cache for ", key);
  const uint32_t num_tensors = entry->desc.num_tensors;
  const auto layout = w.layout;
  const uint64_t slots = static_cast<uint64_t>(entry->desc.shape[0]);
  if (layout == Layout::kBlocksToBlocks) {
    LLMDD_CHECK(entry->is_blocks || entry->is_registered || entry->mixed, LLM_PARAM_INVALID, key, " is a contiguous cache");
    LLMDD_RETURN_IF_ERROR(CheckBlocksSelection(w, key, num_tensors, entry->stride, slots));
  } else {
    LLMDD_RETURN_IF_ERROR(CheckTensorSelection(w, key, num_tensors));
    LLMDD_CHECK(!entry->is_blocks || entry->is_registered || entry->mixed || (block_as_slot && layout == Layout::kSlotToSlot),
                LLM_PARAM_INVALID, key, " is a blocks cache; address it with a BlocksCacheKey and src_blocks");
    LLMDD_RETURN_IF_ERROR(CheckSlotSelection(w, key, entry->stride));
  }
  LLMDD_CHECK(ChunksOf(layout, slot, entry->stride, w.size, w.blocks, w.chunk_bytes, w.chunk_count, &out->chunks),
              LLM_PARAM_INVALID, "the selection of ", key, " does not fit the cache");
  const bool prefix_key = w.key_kind == RemoteKeyKind::kCacheKey && w.prefix_id != kInvalidId;  // prefix keys persist
  out->consumes = layout != Layout::kBlocksToBlocks && !entry->is_registered && w.key_kind != RemoteKeyKind::kBlocksKey &&
                  !prefix_key &&
                  (layout == Layout::kSlotToSlot ? w.size == entry->stride
                                                 : uint64_t{w.chunk_count} * w.chunk_bytes == entry->stride);
  out->slot = slot;
  out->entry = std::move(entry);
  return DetailedStatus::Ok();
}

// A push named by address (upstream's TransferConfig): finds the cache whose tensor holds the
// destination and rewrites the request into one by cache id and slot, which ResolveRequest
// then checks like any other. The address must start a slot; the push may fill less than a
// whole slot (upstream writes the sender's slot bytes at the address).
DetailedStatus AddressToSlot(const CacheRegistry &registry, uint64_t cluster_id, TransferRequest *w) {
  LLMDD_CHECK(w->blocks.size() == 1 && w->tensor_count == 1 && w->layout == Layout::kSlotToSlot,
              LLM_PARAM_INVALID, "a push by address moves one tensor slot to one address");
  const uint64_t addr = w->blocks[0];
  std::optional<CacheRegistry::AddressHit> hit = registry.FindAddress(addr, w->size);
  LLMDD_CHECK(hit.has_value(), LLM_KV_CACHE_NOT_EXIST, "cluster ", cluster_id, " has no cache whose memory holds the ",
              w->size, " bytes at address ", addr);
  const CacheEntry &entry = *hit->entry;
  LLMDD_CHECK(entry.stride > 0 && hit->offset % entry.stride == 0, LLM_PARAM_INVALID, "address ", addr, " is ",
              hit->offset, " bytes into tensor ", hit->tensor, " of cache ", entry.cache_id,
              ", not at the start of one of its slots of ", entry.stride, " bytes");
  w->key_kind = RemoteKeyKind::kCacheIdAndIndex;
  w->cache_id = entry.cache_id;
  w->batch_index = static_cast<uint32_t>(hit->offset / entry.stride);
  w->all_tensors = false;
  w->tensor_begin = hit->tensor;
  w->whole_slot = false;
  w->blocks.clear();
  return DetailedStatus::Ok();
}

// The owner's checks of a push, streamed or described (one place: both fail alike): resolves
// the destination and checks that the `carried` bytes (a streamed push's data, a described
// push's push_bytes) are what it takes. `expected`: the destination's bytes.
DetailedStatus ResolvePush(const CacheRegistry &registry, uint64_t cluster_id, TransferRequest *w, uint64_t carried,
                           Resolved *out, uint64_t *expected) {
  const bool by_address = w->key_kind == RemoteKeyKind::kAddress;
  if (by_address) LLMDD_RETURN_IF_ERROR(AddressToSlot(registry, cluster_id, w));
  LLMDD_RETURN_IF_ERROR(ResolveRequest(registry, cluster_id, *w, out, by_address));
  *expected = 0;
  for (const Chunk &c : out->chunks) *expected += c.bytes;
  *expected *= w->tensor_count;
  LLMDD_CHECK(*expected == carried, LLM_PARAM_INVALID, "push carries ", carried, " bytes, the destination takes ",
              *expected);
  return DetailedStatus::Ok();
}

// Where each selected tensor of `entry` lives, as told to a peer that reaches it one-sided: an
// offset in one of this process's pools, or (registered caches in host memory) its address.
std::vector<DescribedTensor> DescribeTensors(const CacheEntry &entry, uint32_t tensor_begin, uint32_t tensor_count,
                                             const std::shared_ptr<MemoryPool> &host_pool,
                                             const std::shared_ptr<MemoryPool> &device_pool) {
  std::vector<DescribedTensor> tensors(tensor_count);
  for (uint32_t t = 0; t < tensor_count; ++t) {
    const uintptr_t addr = entry.tensor_addrs[tensor_begin + t];
    const std::shared_ptr<MemoryPool> &pool = entry.memory_kind == MemoryKind::kHost ? host_pool : device_pool;
    DescribedTensor &described = tensors[t];  // kUnreadable unless below
    if (!entry.is_registered && pool != nullptr) {
      described.location = Location::kRegion;
      described.region_id =
          static_cast<uint8_t>(entry.memory_kind == MemoryKind::kHost ? RegionId::kHostPool : RegionId::kDevicePool);
      described.value = addr - reinterpret_cast<uintptr_t>(pool->base());
    } else if (IsHostAddressable(entry.memory_kind)) {
      described.location = Location::kRawHost;
      described.value = addr;
    }
  }
  return tensors;
}

}  // namespace

// How long the owner's side of a transfer may take: the longer of its own sync_kv_timeout and
// the requester's (bounded), at least a second, so the requester's deadline is the one that ends
// a slow transfer (as LLM_TIMEOUT) rather than the owner resetting the link under it.
namespace {
Deadline ServeDeadline(int64_t own_timeout_ms, const TransferRequest &w) {
  return DeadlineIn(std::max<int64_t>({own_timeout_ms, 1000, std::min(w.timeout_ms, kMaxServeTimeoutMs)}));
}
}  // namespace

DetailedStatus DataDistEngine::ServePull(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) {
  const uint64_t started = MeterStart();
  TransferRequest w;
  if (!w.Decode(payload)) return DetailedStatus(LLM_LINK_FAILED, "malformed pull request from the peer");
  const Deadline deadline = ServeDeadline(options_.sync_kv_timeout_ms, w);
  Resolved resolved;
  DetailedStatus status;
  // Where memory lives (pool offsets, raw addresses) is told only to a peer that reads it
  // one-sided, which the handshake allowed only after proving it (shm, cuda_ipc, CMA: the pool
  // channel passed its credential check, so the peer is on this host and may map our pools).
  if (w.delivery == Delivery::kDescribe && !link.HasOneSided())
    status = DetailedStatus(LLM_PARAM_INVALID, "a described pull needs a same-host shm link; this link is tcp");
  if (status.ok()) status = ResolveRequest(registry_, cluster_id_, w, &resolved);
  if (!status.ok()) {
    LLMDD_LOG(kInfo, "pull from cluster ", link.peer_cluster_id(), " refused: ", status.message());
    Meter(&link, OpKind::kServePull, status, 0, started);
    return link.Send(FrameType::kPullReply, header.request_id, EncodeStatus(status), {}, 0, deadline);
  }
  const CacheEntry &entry = *resolved.entry;
  PullReply reply;
  reply.owner_stride = entry.stride;
  reply.slot = resolved.slot;
  StreamSpans send;  // stream mode: the chunks' bytes, staged when in CUDA memory
  uint64_t data_bytes = 0;
  if (w.delivery == Delivery::kDescribe) {
    reply.tensors = DescribeTensors(entry, w.tensor_begin, w.tensor_count, host_pool_, device_pool_);
  } else {
    send = MakeStreamSpans(entry, w.tensor_begin, w.tensor_count, resolved.chunks);
    data_bytes = send.bytes;
    DetailedStatus staged_ok = CopyRegions(send.to_staging, MemoryKind::kHost, entry.memory_kind);
    if (!staged_ok.ok()) {
      Meter(&link, OpKind::kServePull, staged_ok, 0, started);
      return link.Send(FrameType::kPullReply, header.request_id, EncodeStatus(staged_ok), {}, 0, deadline);
    }
  }
  // A streamed pull that consumes no key is over for the owner once its bytes are sent (the
  // local `resolved` pins the cache until then): nothing to keep, no kRelease to wait for,
  // which spares the requester a send per pull. Described pulls are read after this returns,
  // so their cache stays pinned until the requester's kRelease.
  const bool needs_release = w.delivery == Delivery::kDescribe || resolved.consumes;
  reply.needs_release = needs_release;
  if (needs_release) {
    ServedTransfer served;
    served.pin = resolved.entry;
    served.cache_id = entry.cache_id;
    served.slot = resolved.slot;
    served.tensor_begin = w.tensor_begin;
    served.tensor_end = w.tensor_begin + w.tensor_count;
    served.consumes = resolved.consumes;
    link.AddServed(header.request_id, std::move(served));
  }
  DetailedStatus sent = link.Send(FrameType::kPullReply, header.request_id, reply.Encode(), send.spans, data_bytes, deadline);
  Meter(&link, OpKind::kServePull, sent, data_bytes, started);
  return sent;
}

DetailedStatus DataDistEngine::ServeRelease(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) {
  ReleaseMessage release;
  if (!release.Decode(payload)) return DetailedStatus(LLM_LINK_FAILED, "malformed release from the peer");
  std::optional<ServedTransfer> served = link.TakeServed(header.request_id);
  if (!served) return DetailedStatus::Ok();
  if (release.success && served->consumes)
    registry_.OnSlotPulled(served->cache_id, served->slot, served->tensor_begin, served->tensor_end);
  return DetailedStatus::Ok();
}

DetailedStatus DataDistEngine::ServePush(Link &link, const FrameHeader &header, const std::vector<uint8_t> &payload) {
  const uint64_t started = MeterStart();
  TransferRequest w;
  if (!w.Decode(payload)) return DetailedStatus(LLM_LINK_FAILED, "malformed push request from the peer");
  const Deadline deadline = ServeDeadline(options_.sync_kv_timeout_ms, w);
  const bool described = w.delivery == Delivery::kDescribe;
  if (described && header.data_bytes != 0)
    return DetailedStatus(LLM_LINK_FAILED, "a described push request carries data; the link is broken");
  Resolved resolved;
  uint64_t expected = 0;
  DetailedStatus status;
  // As for described pulls: where memory lives is told only to a peer the handshake gave a
  // one-sided transport. Not an error of the push: the requester streams it instead.
  if (described && !link.HasOneSided())
    status = DetailedStatus(LLM_FEATURE_NOT_ENABLED, "a described push needs a one-sided link; this link is tcp");
  if (status.ok())
    status = ResolvePush(registry_, cluster_id_, &w, described ? w.push_bytes : header.data_bytes, &resolved, &expected);
  if (!status.ok()) {
    Meter(&link, OpKind::kServePush, status, 0, started);
    if (!described) LLMDD_RETURN_IF_ERROR(link.DrainData(header.data_bytes, deadline));
    return link.Send(FrameType::kPushReply, header.request_id, EncodeStatus(status), {}, 0, deadline);
  }
  if (described) {
    // Held until the requester's kPushComplete, the link going, or the serve deadline: by then
    // the requester's own deadline (at most the serve deadline, which started later) has passed
    // and its transport has stopped writing (ucx closes its endpoint past a deadline).
    PushDescribeReply reply;
    reply.owner_stride = resolved.entry->stride;
    reply.slot = resolved.slot;
    reply.tensors = DescribeTensors(*resolved.entry, w.tensor_begin, w.tensor_count, host_pool_, device_pool_);
    reply.needs_release = true;
    ServedTransfer served;
    served.pin = resolved.entry;
    served.cache_id = resolved.entry->cache_id;
    served.slot = resolved.slot;
    served.tensor_begin = w.tensor_begin;
    served.tensor_end = w.tensor_begin + w.tensor_count;
    served.push = true;
    served.bytes = expected;
    served.expires = deadline;
    served.started = started;  // metered when the requester says the push is complete
    link.AddServed(header.request_id, std::move(served));
    return link.Send(FrameType::kPushReply, header.request_id, reply.Encode(), {}, 0, deadline);
  }
  StreamSpans receive = MakeStreamSpans(*resolved.entry, w.tensor_begin, w.tensor_count, resolved.chunks);
  LLMDD_RETURN_IF_ERROR(link.ReceiveData(receive.spans, deadline));
  status = CopyRegions(receive.to_device, resolved.entry->memory_kind, MemoryKind::kHost);
  Meter(&link, OpKind::kServePush, status, expected, started);
  return link.Send(FrameType::kPushReply, header.request_id, EncodeStatus(status), {}, 0, deadline);
}

DetailedStatus DataDistEngine::ServePushComplete(Link &link, const FrameHeader &header,
                                                 const std::vector<uint8_t> &payload) {
  PushComplete done;
  if (!done.Decode(payload)) return DetailedStatus(LLM_LINK_FAILED, "malformed push completion from the peer");
  const Deadline deadline = DeadlineIn(std::max<int64_t>(options_.sync_kv_timeout_ms, 1000));
  std::optional<ServedTransfer> served = link.TakeServed(done.push_request_id);
  DetailedStatus status;
  if (!served) {
    status = DetailedStatus(LLM_TIMEOUT, detail::Concat("cluster ", cluster_id_, " holds no described push ",
                                                        done.push_request_id, " (released past its deadline)"));
  } else if (!served->push) {
    const uint64_t id = done.push_request_id;
    link.AddServed(id, std::move(*served));
    status = DetailedStatus(LLM_PARAM_INVALID, detail::Concat("request ", id, " is a pull, not a described push"));
  } else if (done.success) {
    Meter(&link, OpKind::kServePush, status, served->bytes, served->started);
  }
  return link.Send(FrameType::kPushReply, header.request_id, EncodeStatus(status), {}, 0, deadline);
}

}  // namespace llm_datadist
