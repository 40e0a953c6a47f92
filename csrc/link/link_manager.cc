// SPDX-License-Identifier: Apache-2.0
#include "link/link_manager.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>

#include "common/logging.h"
#include "common/sealed_memfd.h"
#include "common/sha256.h"
#include "link/messages.h"

namespace llm_datadist {

namespace {

std::string Hex(const std::vector<uint8_t> &bytes) {
  static const char kHex[] = "0123456789abcdef";
  std::string s;
  for (uint8_t b : bytes) {
    s.push_back(kHex[b >> 4]);
    s.push_back(kHex[b & 15]);
  }
  return s;
}

Sha256Digest Mac(const std::string &secret, const char *role, const std::vector<uint8_t> &first,
                 const std::vector<uint8_t> &second, uint64_t id_a, uint64_t id_b) {
  ByteWriter w;
  w.PutBytes(role, std::strlen(role)).PutBytes(first.data(), first.size()).PutBytes(second.data(), second.size());
  w.Put(id_a).Put(id_b);
  return HmacSha256(secret, w.bytes().data(), w.bytes().size());
}

// A peer's region while the handshake maps it.
struct WireRegion {
  RemoteRegion region;
  bool has_memfd = false;
};

std::vector<WireRegion> FromAnnounced(const std::vector<RegionAnnouncement> &announced) {
  std::vector<WireRegion> out;
  for (const RegionAnnouncement &a : announced) out.push_back({a.ToRemote(), a.has_memfd});
  return out;
}

std::vector<RegionAnnouncement> Announce(const std::vector<LocalRegion> &regions) {
  std::vector<RegionAnnouncement> out;
  for (const LocalRegion &r : regions) out.push_back(RegionAnnouncement::Of(r));
  return out;
}

// What this side's transport providers offer the peer (nothing, for the built-in ones).
std::vector<TransportOffer> LocalOffers(const std::vector<LocalRegion> &regions) {
  std::vector<TransportOffer> offers;
  for (const TransportProvider *provider : TransportProviders()) {
    std::vector<uint8_t> bytes = provider->Offer(regions);
    if (!bytes.empty()) offers.push_back({provider->kind(), std::move(bytes)});
  }
  return offers;
}

std::vector<int> MemFds(const std::vector<LocalRegion> &regions) {
  std::vector<int> fds;
  for (const LocalRegion &r : regions)
    if (r.memfd >= 0) fds.push_back(r.memfd);
  return fds;
}

size_t CountMemfds(const std::vector<WireRegion> &regions) {
  size_t n = 0;
  for (const WireRegion &r : regions) n += r.has_memfd ? 1 : 0;
  return n;
}

// Maps the peer's memfds (in region order) read-only; closes the fds. Only memfds sealed against
// resizing and as large as announced: a shrink by the peer would fault our next read.
DetailedStatus MapRegions(std::vector<WireRegion> &regions, const std::vector<int> &fds) {
  DetailedStatus status;
  size_t next = 0;
  for (WireRegion &wr : regions) {
    if (!wr.has_memfd) continue;
    if (next >= fds.size()) {
      status = DetailedStatus(LLM_LINK_FAILED, "peer sent fewer pool descriptors than it announced");
      break;
    }
    status = CheckSealedMemfd(fds[next], wr.region.size);
    if (!status.ok()) break;
    void *p = mmap(nullptr, wr.region.size, PROT_READ, MAP_SHARED, fds[next++], 0);
    if (p == MAP_FAILED) {
      status = DetailedStatus(LLM_LINK_FAILED, detail::Concat("cannot map the peer's pool: ", std::strerror(errno)));
      break;
    }
    wr.region.mapped = static_cast<const uint8_t *>(p);
  }
  for (int fd : fds) close(fd);
  if (!status.ok()) {
    for (WireRegion &wr : regions) {
      if (wr.region.mapped != nullptr) munmap(const_cast<uint8_t *>(wr.region.mapped), wr.region.size);
      wr.region.mapped = nullptr;
    }
  }
  return status;
}

std::vector<RemoteRegion> ToRemote(const std::vector<WireRegion> &regions) {
  std::vector<RemoteRegion> out;
  for (const WireRegion &wr : regions) out.push_back(wr.region);
  return out;
}

// The link a handshake settled: every transport provider that serves it contributes a transport.
std::shared_ptr<Link> BuildLink(LinkSetup setup, PeerView view, int fd, LinkHandler *handler) {
  // view.peer_offers: every offer of the peer; each provider reads its own kind's (PeerView::OfferOf).
  view.local_cluster_id = setup.local_cluster_id;
  view.peer_cluster_id = setup.peer_cluster_id;
  view.accepted_by_listener = setup.accepted_by_listener;
  view.same_host = setup.same_host;
  view.peer_pid = setup.peer_pid;
  view.regions = &setup.remote_regions;
  SelectTransports(view, &setup.transports, &setup.transport, &setup.transport_reason);
  return std::make_shared<Link>(std::move(setup), fd, handler);
}

DetailedStatus Malformed(const char *what) {
  return DetailedStatus(LLM_LINK_FAILED, detail::Concat("malformed ", what, " from the peer"));
}

bool IsLoopback(const std::string &ip) {
  in_addr v4{};
  if (inet_pton(AF_INET, ip.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  return inet_pton(AF_INET6, ip.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6);
}

// One handshake frame of the expected type, small (kMaxHandshakePayload).
DetailedStatus RecvHandshakeFrame(int fd, FrameType type, const char *what, std::vector<uint8_t> *payload,
                                  Deadline deadline) {
  FrameHeader header;
  LLMDD_RETURN_IF_ERROR(RecvFrame(fd, &header, payload, deadline, kMaxHandshakePayload));
  LLMDD_CHECK(header.type == static_cast<uint16_t>(type), LLM_LINK_FAILED, "unexpected frame type ", header.type,
              " instead of the ", what);
  return DetailedStatus::Ok();
}

// A server's refusal in the frame the client waits for: the status and message only (kHelloReply,
// kAuthReply), or a whole acknowledgement that maps nothing (kLinkAck).
std::vector<uint8_t> Refusal(FrameType type, Status code, const std::string &message) {
  auto encode = [&](auto refusal) {
    refusal.status = code;
    refusal.message = message;
    return refusal.Encode();
  };
  if (type == FrameType::kHelloReply) return encode(HelloReply{});
  if (type == FrameType::kAuthReply) return encode(AuthReply{});
  return encode(LinkAck{});
}

// The server's end of the pool channel. Waits on `unix_listen` for the client's connection (or on
// the handshake connection `fd` for its kShmAbort), checks the client (`uid_allowed`, the echoed
// nonce, the announced count of memfds), maps its memfds into `client_regions` and sends ours.
// Ok: *channel is the connected pool channel (the link's frames may move onto it).
DetailedStatus AcceptPoolChannel(int unix_listen, int fd, const std::vector<uint8_t> &nonce_s,
                                 const std::vector<LocalRegion> &local_regions,
                                 const std::function<bool(int, std::string *)> &uid_allowed,
                                 const std::string &remote_address, std::vector<WireRegion> *client_regions,
                                 Deadline deadline, int *channel) {
  pollfd fds[2] = {{unix_listen, POLLIN, 0}, {fd, POLLIN, 0}};
  const int64_t left = std::max<int64_t>(0, MillisLeft(deadline));
  if (poll(fds, 2, static_cast<int>(left)) <= 0)
    return DetailedStatus(LLM_LINK_FAILED, "the peer did not connect its pool channel in time");
  if (!(fds[0].revents & POLLIN)) {
    std::vector<uint8_t> abort_payload;
    if (!RecvHandshakeFrame(fd, FrameType::kShmAbort, "pool channel answer", &abort_payload, deadline).ok())
      return DetailedStatus(LLM_LINK_FAILED, "the peer could not reach our pool channel");
    ShmAbortMessage abort_message;
    return DetailedStatus(LLM_LINK_FAILED, abort_message.Decode(abort_payload) ? abort_message.reason
                                                                               : "the peer chose tcp");
  }
  const int accepted = accept4(unix_listen, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (accepted < 0) return DetailedStatus(LLM_LINK_FAILED, "the peer did not connect its pool channel in time");
  std::vector<int> received;
  std::vector<uint8_t> echo;
  std::string why;
  DetailedStatus shm = uid_allowed(accepted, &why) ? RecvFds(accepted, &received, &echo, kMaxHandshakeRegions, deadline)
                                                   : DetailedStatus(LLM_LINK_FAILED, why);
  if (shm.ok() && echo != nonce_s) {
    for (int f : received) close(f);
    shm = DetailedStatus(LLM_LINK_FAILED, "pool channel opened by a process that is not the peer");
  } else if (shm.ok() && received.size() != CountMemfds(*client_regions)) {
    for (int f : received) close(f);
    shm = DetailedStatus(LLM_LINK_FAILED, "peer sent a different number of pool descriptors than announced");
  } else if (shm.ok()) {
    shm = MapRegions(*client_regions, received);
    if (shm.ok()) shm = SendFds(accepted, MemFds(local_regions), {}, deadline);
  }
  if (!shm.ok()) {
    LLMDD_LOG(kWarning, "pool channel from ", remote_address, " refused: ", shm.message());
    close(accepted);
    return shm;
  }
  *channel = accepted;
  return DetailedStatus::Ok();
}

}  // namespace

LinkManager::LinkManager(uint64_t cluster_id, LinkHandler *handler, RegionProvider regions, LinkOptions options)
    : cluster_id_(cluster_id), handler_(handler), regions_(std::move(regions)), options_(std::move(options)) {
  maintenance_ = std::thread([this] { MaintenanceLoop(); });
}

LinkManager::~LinkManager() {
  StopListener();
  stop_.store(true);
  if (maintenance_.joinable()) maintenance_.join();
  {
    std::lock_guard<std::mutex> lock(handshakes_mutex_);
    for (Handshake &h : handshakes_)
      if (h.thread.joinable()) h.thread.join();
    handshakes_.clear();
  }
  CloseAll();
}

// ---- listener -------------------------------------------------------------------------------

DetailedStatus LinkManager::StartListener(const std::string &ip, uint16_t port) {
  std::lock_guard<std::mutex> lock(listener_mutex_);
  if (listen_fd_ >= 0 && ip == listen_ip_ && port == listen_port_) return DetailedStatus::Ok();
  if (options_.secret.empty() && !IsLoopback(ip)) {
    LLMDD_CHECK(!options_.require_secret, LLM_PARAM_INVALID, "refusing to listen on ", ip, ":", port,
                " without a link secret (llmdd.RequireSecret is set); set llmdd.LinkSecret (llm-datadist secret "
                "makes one) or listen on a loopback address");
    LLMDD_LOG(kWarning, "listening on ", ip, ":", port, " without a link secret: anyone who can reach this port can "
              "link and read every pool; set llmdd.LinkSecret (llm-datadist secret makes one)");
  }
  int fd = -1;
  uint16_t bound = 0;
  LLMDD_RETURN_IF_ERROR(ListenTcp(ip, port, &fd, &bound));
  if (listen_fd_ >= 0) {
    listener_stop_.store(true);
    if (listener_.joinable()) listener_.join();
    close(listen_fd_);
  }
  listen_fd_ = fd;
  listen_ip_ = ip;
  listen_port_ = port == 0 ? bound : port;
  listener_stop_.store(false);
  listener_ = std::thread([this] { ListenerLoop(); });
  LLMDD_LOG(kInfo, "cluster ", cluster_id_, " listening on ", ip, ":", listen_port_);
  return DetailedStatus::Ok();
}

void LinkManager::StopListener() {
  std::lock_guard<std::mutex> lock(listener_mutex_);
  if (listen_fd_ < 0) return;
  listener_stop_.store(true);
  if (listener_.joinable()) listener_.join();
  close(listen_fd_);
  listen_fd_ = -1;
  listen_ip_.clear();
  listen_port_ = 0;
}

bool LinkManager::listening() const {
  std::lock_guard<std::mutex> lock(listener_mutex_);
  return listen_fd_ >= 0;
}

std::string LinkManager::listen_address() const {
  std::lock_guard<std::mutex> lock(listener_mutex_);
  if (listen_fd_ < 0) return "";
  return detail::Concat(listen_ip_, ":", listen_port_);
}

namespace {
std::string PeerHost(const sockaddr_storage &addr) {
  char host[128] = {0};
  if (addr.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(&addr)->sin_addr, host, sizeof(host));
  } else if (addr.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 *>(&addr)->sin6_addr, host, sizeof(host));
  }
  return host;
}

// A connection whose hello is still arriving, held by the listener thread.
struct PendingConnection {
  int fd = -1;
  std::string remote;
  Deadline deadline;
  std::vector<uint8_t> bytes;  // of the first frame, so far
};

// Reads what arrived of the first frame. 1: complete (or from another protocol version, which
// the handshake answers), 0: more to come, -1: closed or not a hello we accept.
int ReadFirstFrame(PendingConnection &c) {
  for (;;) {
    size_t want = sizeof(FrameHeader);
    if (c.bytes.size() >= sizeof(FrameHeader)) {
      FrameHeader header;
      std::memcpy(&header, c.bytes.data(), sizeof(header));
      if (header.magic == kFrameMagic && header.version != kProtocolVersion) return 1;
      if (!CheckFrameHeader(header, kMaxHandshakePayload).ok() ||
          header.type != static_cast<uint16_t>(FrameType::kHello))
        return -1;
      want += header.payload_bytes;
      if (c.bytes.size() == want) return 1;
    }
    const size_t have = c.bytes.size();
    c.bytes.resize(want);
    ssize_t got = recv(c.fd, c.bytes.data() + have, want - have, 0);
    c.bytes.resize(have + (got > 0 ? static_cast<size_t>(got) : 0));
    if (got > 0) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    return -1;
  }
}
}  // namespace

void LinkManager::ListenerLoop() {
  // Until its hello has arrived a connection costs an fd and a few bytes here, not a thread:
  // idle and half-open connections cannot exhaust threads, and a legitimate client, which sends
  // its hello at once, gets through a flood of them.
  std::deque<PendingConnection> pending;
  std::vector<pollfd> fds;
  auto drop_oldest = [&] {
    close(pending.front().fd);
    pending.pop_front();
  };
  while (!listener_stop_.load()) {
    fds.assign(1, pollfd{listen_fd_, POLLIN, 0});
    for (const PendingConnection &c : pending) fds.push_back({c.fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), 100) < 0 && errno != EINTR) continue;
    std::vector<bool> readable(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) readable[i] = fds[i + 1].revents != 0;
    // Serve what arrived, expire the slow, then accept (which may evict the oldest).
    const Deadline now = Clock::now();
    std::deque<PendingConnection> still;
    for (size_t i = 0; i < pending.size(); ++i) {
      PendingConnection &c = pending[i];
      const int state = readable[i] ? ReadFirstFrame(c) : 0;
      if (state > 0) {
        StartHandshake(c.fd, c.remote, std::move(c.bytes));
      } else if (state < 0 || now >= c.deadline) {
        close(c.fd);
      } else {
        still.push_back(std::move(c));
      }
    }
    pending.swap(still);
    if (!(fds[0].revents & POLLIN)) continue;
    for (int accepted = 0; accepted < 64; ++accepted) {
      sockaddr_storage addr;
      socklen_t len = sizeof(addr);
      int fd = accept4(listen_fd_, reinterpret_cast<sockaddr *>(&addr), &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        if ((errno == EMFILE || errno == ENFILE) && !pending.empty()) {
          drop_oldest();  // out of descriptors: the oldest silent connection makes room
          continue;
        }
        break;
      }
      // Replies and streamed bytes go out on this end: no Nagle delay behind an unacknowledged
      // segment (the connecting end sets the same in ConnectTcp).
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      if (pending.size() >= kMaxPendingConnections) drop_oldest();
      pending.push_back({fd, PeerHost(addr), DeadlineIn(kServerHelloTimeoutMs), {}});
    }
  }
  for (PendingConnection &c : pending) close(c.fd);
}

void LinkManager::StartHandshake(int fd, const std::string &remote, std::vector<uint8_t> hello_frame) {
  std::lock_guard<std::mutex> lock(handshakes_mutex_);
  int &from_address = handshakes_per_address_[remote];
  if (handshakes_running_.load() >= kMaxConcurrentHandshakes || from_address >= kMaxHandshakesPerAddress) {
    // Closed at once: connections that sent a hello and stall cost at most the caps' threads.
    if (from_address == 0) handshakes_per_address_.erase(remote);
    close(fd);
    return;
  }
  ++from_address;
  handshakes_running_.fetch_add(1);
  auto done = std::make_shared<std::atomic<bool>>(false);
  handshakes_.push_back({std::thread([this, fd, done, remote, hello = std::move(hello_frame)]() mutable {
                           ServeConnection(fd, remote, std::move(hello));
                           {
                             std::lock_guard<std::mutex> guard(handshakes_mutex_);
                             auto it = handshakes_per_address_.find(remote);
                             if (it != handshakes_per_address_.end() && --it->second <= 0)
                               handshakes_per_address_.erase(it);
                           }
                           handshakes_running_.fetch_sub(1);
                           done->store(true);
                         }),
                         done});
}

void LinkManager::ServeConnection(int fd, std::string remote_address, std::vector<uint8_t> hello) {
  // No exception from a peer's bytes may leave this thread (it would end the process).
  try {
    ServerHandshake(fd, std::move(remote_address), hello);
  } catch (const std::exception &e) {
    LLMDD_LOG(kWarning, "a link handshake failed: ", e.what());
  }
}

void LinkManager::MaintenanceLoop() {
  while (!stop_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(kHeartbeatIntervalMs / 2));
    std::vector<std::shared_ptr<Link>> reaped;
    std::vector<std::shared_ptr<Link>> active;
    {
      std::lock_guard<std::mutex> lock(links_mutex_);
      for (auto it = links_.begin(); it != links_.end();) {
        if (it->second->state() == Link::State::kClosed) {
          reaped.push_back(it->second);
          it = links_.erase(it);
        } else {
          active.push_back(it->second);
          ++it;
        }
      }
    }
    for (auto &link : active) {
      link->SendHeartbeatIfIdle(kHeartbeatIntervalMs);
      if (const size_t dropped = link->DropExpiredServed(Clock::now()))
        LLMDD_LOG(kWarning, "link to cluster ", link->peer_cluster_id(), ": released ", dropped,
                  " transfer(s) the peer did not complete within the serve deadline");
      // Only the owner's end (accepted links) drops a silent peer: a decode waiting on a frozen
      // owner keeps its link, and its call ends in LLM_TIMEOUT at sync_kv_timeout.
      if (link->accepted_by_listener() && link->SilentFor(kPeerDeadMs))
        link->Close(Link::State::kClosed, detail::Concat("the peer sent nothing for more than ", kPeerDeadMs, " ms"));
    }
    reaped.clear();  // joins their readers outside the lock
    // Join the handshake threads that finished.
    std::vector<std::thread> finished;
    {
      std::lock_guard<std::mutex> lock(handshakes_mutex_);
      for (auto it = handshakes_.begin(); it != handshakes_.end();) {
        if (it->done->load()) {
          finished.push_back(std::move(it->thread));
          it = handshakes_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (std::thread &t : finished)
      if (t.joinable()) t.join();
  }
}

// ---- link / unlink --------------------------------------------------------------------------

std::shared_ptr<std::timed_mutex> LinkManager::PeerLock(uint64_t cluster_id) {
  std::lock_guard<std::mutex> lock(peer_locks_mutex_);
  auto &slot = peer_locks_[cluster_id];
  if (!slot) slot = std::make_shared<std::timed_mutex>();
  return slot;
}

std::shared_ptr<Link> LinkManager::Find(uint64_t cluster_id) const {
  std::lock_guard<std::mutex> lock(links_mutex_);
  auto it = links_.find(cluster_id);
  if (it == links_.end() || it->second->state() == Link::State::kClosed) return nullptr;
  return it->second;
}

size_t LinkManager::link_count() const {
  std::lock_guard<std::mutex> lock(links_mutex_);
  size_t n = 0;
  for (const auto &entry : links_) n += entry.second->state() != Link::State::kClosed;
  return n;
}

uint64_t LinkManager::links_installed(uint64_t cluster_id) const {
  std::lock_guard<std::mutex> lock(links_mutex_);
  auto it = installs_.find(cluster_id);
  return it == installs_.end() ? 0 : it->second;
}

std::vector<uint64_t> LinkManager::linked_clusters() const {
  std::lock_guard<std::mutex> lock(links_mutex_);
  std::vector<uint64_t> ids;
  for (const auto &entry : links_)
    if (entry.second->state() != Link::State::kClosed) ids.push_back(entry.first);
  return ids;
}

namespace {
// A link that still speaks for its cluster: active and heard from (or mid-frame) lately.
bool IsLive(const Link &link) {
  return link.state() == Link::State::kActive && !link.PeerHungUp() && !link.SilentFor(4 * kHeartbeatIntervalMs);
}
}  // namespace

std::shared_ptr<Link> LinkManager::LiveLink(uint64_t cluster_id) const {
  std::lock_guard<std::mutex> lock(links_mutex_);
  auto it = links_.find(cluster_id);
  if (it == links_.end() || !IsLive(*it->second)) return nullptr;
  return it->second;
}

DetailedStatus LinkManager::Install(const std::shared_ptr<Link> &link) {
  std::shared_ptr<Link> old;
  {
    std::lock_guard<std::mutex> lock(links_mutex_);
    auto &slot = links_[link->peer_cluster_id()];
    LLMDD_CHECK(slot == nullptr || !IsLive(*slot), LLM_ALREADY_LINK, "cluster ", link->peer_cluster_id(),
                " already has a live link to cluster ", cluster_id_, "; unlink it first");
    old = slot;
    slot = link;
    ++installs_[link->peer_cluster_id()];
  }
  if (old) old->Close(Link::State::kClosed, "replaced by a new link from the same cluster");
  return DetailedStatus::Ok();
}

bool LinkManager::PeerUidAllowed(int unix_fd, std::string *why) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (getsockopt(unix_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *why = detail::Concat("cannot read the pool channel peer's credentials: ", std::strerror(errno));
    return false;
  }
  if (cred.uid == geteuid()) return true;
  for (uint32_t uid : options_.allowed_uids)
    if (cred.uid == uid) return true;
  *why = detail::Concat("the pool channel peer runs as uid ", cred.uid, ", not ", geteuid(),
                        " (allow it with llmdd.AllowedUids)");
  return false;
}

void LinkManager::ForEachLink(const std::function<void(Link &)> &fn) const {
  std::vector<std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(links_mutex_);
    for (const auto &entry : links_)
      if (entry.second->state() != Link::State::kClosed) links.push_back(entry.second);
  }
  for (const auto &link : links) fn(*link);
}

void LinkManager::CloseAll() {
  std::map<uint64_t, std::shared_ptr<Link>> links;
  {
    std::lock_guard<std::mutex> lock(links_mutex_);
    links.swap(links_);
  }
  for (auto &entry : links) {
    entry.second->NotifyClosing();
    entry.second->Close(Link::State::kClosed, "finalized");
  }
}

namespace {
// Runs one(i) for every i in [0, count) on at most kParallelLinksPerCall threads, the rest queued
// (upstream's 16-thread pool in LLMLinkManager): results in input order. Each one() has its own
// deadline, so a call with more clusters than threads may take longer than one timeout, as upstream.
std::vector<DetailedStatus> RunBounded(size_t count, const std::function<DetailedStatus(size_t)> &one) {
  std::vector<DetailedStatus> results(count);
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) results[i] = one(i);
  };
  std::vector<std::thread> threads;
  const size_t n = std::min(count, kParallelLinksPerCall);
  for (size_t t = 1; t < n; ++t) threads.emplace_back(worker);
  if (n > 0) worker();
  for (std::thread &t : threads) t.join();
  return results;
}
}  // namespace

std::vector<DetailedStatus> LinkManager::LinkClusters(const std::vector<LinkTarget> &targets, int32_t timeout_ms) {
  return RunBounded(targets.size(), [&](size_t i) { return LinkOne(targets[i], timeout_ms); });
}

std::vector<DetailedStatus> LinkManager::UnlinkClusters(const std::vector<uint64_t> &cluster_ids, int32_t timeout_ms,
                                                        bool force) {
  return RunBounded(cluster_ids.size(), [&](size_t i) { return UnlinkOne(cluster_ids[i], timeout_ms, force); });
}

DetailedStatus LinkManager::LinkOne(const LinkTarget &target, int32_t timeout_ms) {
  const Deadline deadline = DeadlineIn(timeout_ms);
  LLMDD_CHECK(target.cluster_id != cluster_id_, LLM_PARAM_INVALID, "cannot link to our own cluster id ",
              target.cluster_id);
  auto peer_lock = PeerLock(target.cluster_id);
  std::unique_lock<std::timed_mutex> guard(*peer_lock, std::defer_lock);
  LLMDD_CHECK(guard.try_lock_until(deadline), LLM_PROCESSING_LINK, "another link/unlink of cluster ",
              target.cluster_id, " is in progress and held it past the timeout of ", timeout_ms, " ms");
  if (std::shared_ptr<Link> existing = Find(target.cluster_id)) {
    LLMDD_CHECK(existing->state() != Link::State::kActive, LLM_ALREADY_LINK, "cluster ", target.cluster_id,
                " is already linked (", TransportName(existing->transport()), ")");
  }
  int fd = -1;
  DetailedStatus connected = ConnectTcp(target.ip, target.port, deadline, &fd);
  if (!connected.ok()) {
    return DetailedStatus(connected.code() == LLM_PARAM_INVALID ? LLM_PARAM_INVALID : LLM_LINK_FAILED,
                          detail::Concat("cannot link cluster ", target.cluster_id, ": ", connected.message()))
        .With("remote_cluster_id", target.cluster_id);
  }
  std::shared_ptr<Link> link;
  DetailedStatus status = ClientHandshake(target, fd, deadline, &link);
  if (!status.ok()) {
    close(fd);
    DetailedStatus failed(LLM_LINK_FAILED, detail::Concat("cannot link cluster ", target.cluster_id, " at ",
                                                          target.ip, ":", target.port, ": ", status.message()));
    return failed.With("remote_cluster_id", target.cluster_id);
  }
  if (DetailedStatus installed = Install(link); !installed.ok()) return installed.With("remote_cluster_id", target.cluster_id);
  link->Start();
  handler_->OnLinkUp(*link);
  LLMDD_LOG(kInfo, "cluster ", cluster_id_, " linked to ", target.cluster_id, " at ", target.ip, ":", target.port,
            " over ", TransportName(link->transport()), " (", link->transport_reason(), ")");
  return DetailedStatus::Ok();
}

DetailedStatus LinkManager::UnlinkOne(uint64_t cluster_id, int32_t timeout_ms, bool force) {
  const Deadline deadline = DeadlineIn(timeout_ms);
  auto peer_lock = PeerLock(cluster_id);
  std::unique_lock<std::timed_mutex> guard(*peer_lock, std::defer_lock);
  LLMDD_CHECK(guard.try_lock_until(deadline), LLM_PROCESSING_LINK, "another link/unlink of cluster ", cluster_id,
              " is in progress and held it past the timeout of ", timeout_ms, " ms");
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> lock(links_mutex_);
    auto it = links_.find(cluster_id);
    if (it != links_.end()) {
      link = it->second;
      links_.erase(it);
    }
  }
  // Unlinking what is already gone succeeds, force or not, as upstream (its DestroyEntity of a
  // missing entity is success): two peers unlinking each other at once both get LLM_SUCCESS.
  if (link == nullptr) return DetailedStatus::Ok();
  if (force) {
    link->NotifyClosing();
    link->Close(Link::State::kClosed, "unlinked (force)");
    return DetailedStatus::Ok();
  }
  DetailedStatus told = link->Usable();
  if (told.ok()) {
    auto call = std::make_shared<PendingCall>();
    told = link->Call(FrameType::kUnlinkRequest, {}, {}, call, deadline);
  }
  link->Close(Link::State::kClosed, "unlinked");
  // The peer unlinking us meanwhile is the same outcome as its confirmation.
  if (told.ok() || link->unlinked_by_peer()) return DetailedStatus::Ok();
  // Upstream reports a peer it cannot reach or that does not confirm as LLM_UNLINK_FAILED; here
  // the local end goes either way, so a retry (or force) finds nothing and succeeds.
  const std::string why = told.code() == LLM_TIMEOUT
                              ? detail::Concat("did not confirm the unlink within ", timeout_ms, " ms")
                              : detail::Concat("could not be told about the unlink (", told.message(), ")");
  return DetailedStatus(LLM_UNLINK_FAILED, detail::Concat("cluster ", cluster_id, " ", why, "; the local end is torn down"))
      .With("remote_cluster_id", cluster_id);
}

// ---- handshake ------------------------------------------------------------------------------

DetailedStatus LinkManager::ClientHandshake(const LinkTarget &target, int fd, Deadline deadline,
                                            std::shared_ptr<Link> *out) {
  const std::vector<uint8_t> nonce_c = RandomNonce();
  const bool has_secret = !options_.secret.empty();
  {
    HelloMessage hello;
    hello.client_id = cluster_id_;
    hello.expected_server_id = target.cluster_id;
    hello.nonce = nonce_c;
    hello.has_secret = has_secret;
    LLMDD_RETURN_IF_ERROR(SendFrame(fd, FrameType::kHello, 0, hello.Encode(), 0, deadline));
  }
  std::vector<uint8_t> payload;
  LLMDD_RETURN_IF_ERROR(RecvHandshakeFrame(fd, FrameType::kHelloReply, "handshake reply", &payload, deadline));
  HelloReply hello_reply;
  if (!hello_reply.Decode(payload)) return Malformed("handshake reply");
  if (hello_reply.status != LLM_SUCCESS) return DetailedStatus(hello_reply.status, hello_reply.message);
  const uint64_t server_id = hello_reply.server_id;
  const std::vector<uint8_t> &nonce_s = hello_reply.nonce;
  LLMDD_CHECK(server_id == target.cluster_id, LLM_LINK_FAILED, "the peer is cluster ", server_id, ", not ",
              target.cluster_id);
  LLMDD_CHECK(has_secret == hello_reply.has_secret, LLM_LINK_FAILED,
              has_secret ? "this process has a link secret but the peer has none"
                         : "the peer requires a link secret (llmdd.LinkSecret / LLMDD_LINK_SECRET) and this process has none");
  const std::vector<LocalRegion> local_regions = regions_ ? regions_() : std::vector<LocalRegion>{};
  const std::string boot_id = BootId();
  {
    AuthMessage auth;
    if (has_secret) auth.mac = Mac(options_.secret, "llmdd-client", nonce_s, nonce_c, cluster_id_, server_id);
    auth.boot_id = boot_id;
    auth.pid = getpid();
    auth.regions = Announce(local_regions);
    auth.offers = LocalOffers(local_regions);
    LLMDD_RETURN_IF_ERROR(SendFrame(fd, FrameType::kAuth, 0, auth.Encode(), 0, deadline));
  }
  LLMDD_RETURN_IF_ERROR(RecvHandshakeFrame(fd, FrameType::kAuthReply, "authentication reply", &payload, deadline));
  AuthReply auth_reply;
  if (!auth_reply.Decode(payload)) return Malformed("authentication reply");
  if (auth_reply.status != LLM_SUCCESS) return DetailedStatus(auth_reply.status, auth_reply.message);
  const std::string &server_boot = auth_reply.boot_id;
  const std::string &unix_name = auth_reply.unix_name;
  const int32_t server_pid = auth_reply.pid;
  std::vector<WireRegion> server_regions = FromAnnounced(auth_reply.regions);
  if (has_secret) {
    LLMDD_CHECK(DigestEqual(auth_reply.mac, Mac(options_.secret, "llmdd-server", nonce_c, nonce_s, server_id, cluster_id_)),
                LLM_LINK_FAILED, "the peer's link secret differs from ours");
  }
  const bool same_host = !boot_id.empty() && boot_id == server_boot;
  const bool will_do_shm = !options_.forced && same_host && !unix_name.empty();
  std::string reason;
  if (options_.forced) reason = ForcedReason(*options_.forced);
  else if (!same_host) reason = "peer is on another host";
  else if (unix_name.empty()) reason = "peer offers no shared pools";
  TransportKind transport = TransportKind::kTcp;
  // The pool channel, kept open: when the server says so in its acknowledgement, the link's
  // frames move onto it (a Unix socket round trip costs about 60% of a loopback TCP one).
  struct ChannelFd {
    int fd = -1;
    ~ChannelFd() {
      if (fd >= 0) close(fd);
    }
  } channel;
  if (will_do_shm) {
    int unix_fd = -1;
    DetailedStatus shm = ConnectUnixAbstract(unix_name, deadline, &unix_fd);
    // The server waits for either our connection or a kShmAbort: exactly one of them.
    const bool connected = shm.ok();
    if (connected) {
      channel.fd = unix_fd;
      std::string why;
      // Our pools go only to a process of an allowed uid (the name could be squatted).
      if (!PeerUidAllowed(unix_fd, &why)) {
        shm = DetailedStatus(LLM_LINK_FAILED, why);
        close(channel.fd);  // the server sees the channel end without our descriptors
        channel.fd = -1;
      }
    }
    if (shm.ok()) {
      std::vector<int> fds;
      std::vector<uint8_t> echo;
      shm = SendFds(channel.fd, MemFds(local_regions), nonce_s, deadline);
      if (shm.ok()) shm = RecvFds(channel.fd, &fds, &echo, 16, deadline);
      if (shm.ok() && fds.size() != CountMemfds(server_regions)) {
        for (int f : fds) close(f);
        shm = DetailedStatus(LLM_LINK_FAILED, "peer sent a different number of pool descriptors than announced");
      } else if (shm.ok()) {
        shm = MapRegions(server_regions, fds);
      }
    } else if (!connected) {
      ShmAbortMessage abort_message;
      abort_message.reason = shm.message();
      (void)SendFrame(fd, FrameType::kShmAbort, 0, abort_message.Encode(), 0, deadline);
    }
    if (shm.ok()) {
      transport = TransportKind::kShm;
      reason = "same host: pools shared through memfd";
    } else {
      reason = "same host, but sharing pools failed: " + shm.message();
    }
  } else if (!unix_name.empty()) {
    ShmAbortMessage abort_message;
    abort_message.reason = reason;
    LLMDD_RETURN_IF_ERROR(SendFrame(fd, FrameType::kShmAbort, 0, abort_message.Encode(), 0, deadline));
  }
  LLMDD_RETURN_IF_ERROR(RecvHandshakeFrame(fd, FrameType::kLinkAck, "link acknowledgement", &payload, deadline));
  LinkAck ack;
  if (!ack.Decode(payload)) return Malformed("link acknowledgement");
  if (ack.status != LLM_SUCCESS) return DetailedStatus(LLM_LINK_FAILED, ack.message);
  const bool frames_on_channel = ack.frames_on_channel;
  LLMDD_CHECK(!frames_on_channel || channel.fd >= 0, LLM_LINK_FAILED,
              "the peer moved the link onto a pool channel this process does not have");
  if (!ack.pools_mapped && transport == TransportKind::kShm) {
    transport = TransportKind::kTcp;
    reason = "peer could not map our pools: " + ack.reason;
  }
  int link_fd = fd;
  if (frames_on_channel) {
    link_fd = channel.fd;
    channel.fd = -1;
    close(fd);  // the caller closes it only on failure
  }
  LinkSetup setup;
  setup.local_cluster_id = cluster_id_;
  setup.peer_cluster_id = target.cluster_id;
  setup.frames_over_unix = frames_on_channel;
  setup.poll_spin_us = options_.poll_spin_us;
  setup.peer_pid = server_pid;
  setup.same_host = same_host;
  setup.remote_address = detail::Concat(target.ip, ":", target.port);
  setup.remote_regions = ToRemote(server_regions);
  PeerView view;
  view.forced = options_.forced;
  view.device_ordinal = options_.device_ordinal;
  view.pools_shared = transport == TransportKind::kShm;
  view.pools_reason = reason;
  view.peer_offers = std::move(auth_reply.offers);
  *out = BuildLink(std::move(setup), std::move(view), link_fd, handler_);
  return DetailedStatus::Ok();
}

void LinkManager::ServerHandshake(int fd, std::string remote_address, const std::vector<uint8_t> &hello_frame) {
  // The server's own deadline: a client cannot extend it.
  const Deadline deadline = DeadlineIn(kServerHandshakeTimeoutMs);
  struct ScopedFd {
    int fd;
    ~ScopedFd() {
      if (fd >= 0) close(fd);
    }
  } conn{fd}, unix_listen{-1};
  auto reject = [&](Status code, const std::string &message, FrameType type) {
    (void)SendFrame(fd, type, 0, Refusal(type, code, message), 0, std::min(deadline, DeadlineIn(1000)));
    LLMDD_LOG(kWarning, "refused a link from ", remote_address, ": ", message);
  };
  std::vector<uint8_t> payload;
  FrameHeader hello;
  DetailedStatus got;
  if (hello_frame.size() >= sizeof(FrameHeader)) {  // the listener read it already
    std::memcpy(&hello, hello_frame.data(), sizeof(hello));
    got = CheckFrameHeader(hello, kMaxHandshakePayload);
    if (got.ok() && hello.payload_bytes != hello_frame.size() - sizeof(hello))
      got = DetailedStatus(LLM_LINK_FAILED, "truncated hello");
    if (got.ok()) payload.assign(hello_frame.begin() + sizeof(hello), hello_frame.end());
  } else {
    got = RecvFrame(fd, &hello, &payload, std::min(deadline, DeadlineIn(kServerHelloTimeoutMs)), kMaxHandshakePayload);
  }
  if (got.ok() && hello.type != static_cast<uint16_t>(FrameType::kHello))
    got = DetailedStatus(LLM_LINK_FAILED, "first frame is not a hello");
  if (!got.ok()) {
    LLMDD_LOG(kWarning, "refused a connection from ", remote_address, ": ", got.message());
    // Our frame from another protocol version: tell it why (its reply parser starts the same).
    if (hello.magic == kFrameMagic && hello.version != kProtocolVersion)
      reject(LLM_LINK_FAILED, got.message(), FrameType::kHelloReply);
    return;
  }
  HelloMessage hello_message;
  if (!hello_message.Decode(payload)) return;
  const uint64_t client_id = hello_message.client_id, expected_id = hello_message.expected_server_id;
  const std::vector<uint8_t> &nonce_c = hello_message.nonce;
  if (expected_id != cluster_id_) {
    reject(LLM_LINK_FAILED, detail::Concat("this listener is cluster ", cluster_id_, ", not ", expected_id),
           FrameType::kHelloReply);
    return;
  }
  if (client_id == cluster_id_) {
    reject(LLM_LINK_FAILED, detail::Concat("the peer uses our own cluster id ", cluster_id_), FrameType::kHelloReply);
    return;
  }
  const bool has_secret = !options_.secret.empty();
  if (has_secret != hello_message.has_secret) {
    reject(LLM_LINK_FAILED,
           has_secret ? "this cluster requires a link secret (llmdd.LinkSecret / LLMDD_LINK_SECRET) and the peer has none"
                      : "the peer has a link secret but this cluster has none",
           FrameType::kHelloReply);
    return;
  }
  const std::vector<uint8_t> nonce_s = RandomNonce();
  {
    HelloReply reply;  // nothing about this process before the peer proved the secret
    reply.server_id = cluster_id_;
    reply.nonce = nonce_s;
    reply.has_secret = has_secret;
    if (!SendFrame(fd, FrameType::kHelloReply, 0, reply.Encode(), 0, deadline).ok()) return;
  }
  got = RecvHandshakeFrame(fd, FrameType::kAuth, "authentication frame", &payload, deadline);
  if (!got.ok()) {
    LLMDD_LOG(kWarning, "refused a link from ", remote_address, ": ", got.message());
    return;
  }
  AuthMessage auth;
  if (!auth.Decode(payload)) {
    reject(LLM_LINK_FAILED, "malformed authentication frame", FrameType::kAuthReply);
    return;
  }
  const std::string &client_boot = auth.boot_id;
  const int32_t client_pid = auth.pid;
  std::vector<WireRegion> client_regions = FromAnnounced(auth.regions);
  if (has_secret && !DigestEqual(auth.mac, Mac(options_.secret, "llmdd-client", nonce_s, nonce_c, client_id, cluster_id_))) {
    reject(LLM_LINK_FAILED, "the peer's link secret differs from ours", FrameType::kAuthReply);
    return;
  }
  // A peer naming a cluster that has a live link here does not take its place.
  if (LiveLink(client_id) != nullptr) {
    reject(LLM_ALREADY_LINK, detail::Concat("cluster ", client_id, " already has a live link to cluster ", cluster_id_),
           FrameType::kAuthReply);
    return;
  }
  const std::vector<LocalRegion> local_regions = regions_ ? regions_() : std::vector<LocalRegion>{};
  const std::string boot_id = BootId();
  const bool same_host = !boot_id.empty() && boot_id == client_boot;
  std::string unix_name;
  if (!options_.forced && same_host) {
    unix_name = detail::Concat("llmdd-", getpid(), "-", Hex(nonce_s));
    if (!ListenUnixAbstract(unix_name, &unix_listen.fd).ok()) unix_name.clear();
  }
  {
    AuthReply reply;
    if (has_secret) reply.mac = Mac(options_.secret, "llmdd-server", nonce_c, nonce_s, cluster_id_, client_id);
    reply.boot_id = boot_id;
    reply.pid = getpid();
    reply.unix_name = unix_name;
    reply.regions = Announce(local_regions);
    reply.offers = LocalOffers(local_regions);
    if (!SendFrame(fd, FrameType::kAuthReply, 0, reply.Encode(), 0, deadline).ok()) return;
  }
  TransportKind transport = TransportKind::kTcp;
  std::string reason = options_.forced ? ForcedReason(*options_.forced)
                       : same_host       ? "peer chose tcp"
                                         : "peer is on another host";
  int channel = -1;  // the pool channel, when the exchange over it succeeded
  if (unix_listen.fd >= 0) {
    // Wait for the client's Unix connection, or for it to tell us over TCP that it will not come.
    const DetailedStatus shm = AcceptPoolChannel(
        unix_listen.fd, fd, nonce_s, local_regions,
        [this](int unix_fd, std::string *why) { return PeerUidAllowed(unix_fd, why); }, remote_address,
        &client_regions, deadline, &channel);
    if (shm.ok()) {
      transport = TransportKind::kShm;
      reason = "same host: pools shared through memfd";
    } else {
      reason = shm.message();
      for (WireRegion &wr : client_regions) {
        if (wr.region.mapped != nullptr) munmap(const_cast<uint8_t *>(wr.region.mapped), wr.region.size);
        wr.region.mapped = nullptr;
      }
    }
  }
  close(unix_listen.fd);
  unix_listen.fd = -1;
  // On one host the link's frames go over the Unix pool channel, not loopback TCP: each request
  // and reply then skips the TCP stack (measured round trip here: 14 us Unix, 22 us TCP). The
  // channel was opened by the authenticated peer only (it echoed our nonce, from an allowed uid).
  const bool frames_on_channel = channel >= 0;
  LinkSetup setup;
  setup.local_cluster_id = cluster_id_;
  setup.peer_cluster_id = client_id;
  setup.frames_over_unix = frames_on_channel;
  setup.poll_spin_us = options_.poll_spin_us;
  setup.peer_pid = client_pid;
  setup.same_host = same_host;
  setup.accepted_by_listener = true;
  setup.remote_address = remote_address;
  setup.remote_regions = ToRemote(client_regions);
  PeerView view;
  view.forced = options_.forced;
  view.device_ordinal = options_.device_ordinal;
  view.pools_shared = transport == TransportKind::kShm;
  view.pools_reason = reason;
  view.peer_offers = std::move(auth.offers);
  std::shared_ptr<Link> link = BuildLink(std::move(setup), std::move(view), frames_on_channel ? channel : fd, handler_);
  if (!frames_on_channel) conn.fd = -1;  // the link owns it now
  // Installed before the acknowledgement, so that when the client's link_clusters returns,
  // this end already exists (a pull from either side may follow at once). The client sends
  // nothing before the acknowledgement, so starting the reader first is safe.
  if (DetailedStatus installed = Install(link); !installed.ok()) {
    // Raced with another link from the same cluster id; the link's destructor closes its fd.
    reject(installed.code(), installed.message(), FrameType::kLinkAck);
    return;
  }
  link->Start();
  LinkAck ack;
  ack.pools_mapped = transport == TransportKind::kShm;
  ack.reason = link->transport_reason();
  ack.frames_on_channel = frames_on_channel;
  const std::vector<uint8_t> ack_bytes = ack.Encode();
  // The acknowledgement always travels on the TCP connection the client waits on.
  const DetailedStatus acked = frames_on_channel ? SendFrame(fd, FrameType::kLinkAck, 0, ack_bytes, 0, deadline)
                                                 : link->Send(FrameType::kLinkAck, 0, ack_bytes, {}, 0, deadline);
  if (!acked.ok()) {
    link->Close(Link::State::kClosed, "the peer gave up during the handshake");  // reaped by maintenance
    return;
  }
  handler_->OnLinkUp(*link);
  LLMDD_LOG(kInfo, "cluster ", cluster_id_, " accepted a link from cluster ", client_id, " (", remote_address,
            ") over ", TransportName(link->transport()));
}

}  // namespace llm_datadist
