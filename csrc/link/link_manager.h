// SPDX-License-Identifier: Apache-2.0
// The control plane: a listener at listen_ip_info, the versioned handshake (with an optional
// shared-secret challenge-response), the set of links by peer cluster id, heartbeats, and the
// reaping of links the peer closed.
//
// Handshake (client C calls LinkClusters, server S listens), all frames over TCP (protocol 3):
//   C->S kHello      {client id, expected server id, nonce_c, has_secret}
//   S->C kHelloReply {status, message, server id, nonce_s, has_secret}
//   C->S kAuth       {mac_c, C's boot id, pid, regions}
//   S->C kAuthReply  {status, message, mac_s, S's boot id, pid, unix socket name (same-host
//                     pools offered), S's regions}
//   [shm: C connects to S's abstract Unix socket (each end checks the other's uid with
//    SO_PEERCRED), sends nonce_s and its memfds, S answers with its memfds; both map the other's
//    pools read-only. When S offered a socket and C does not use it, C sends kShmAbort.]
//   S->C kLinkAck    {status, message, transport, reason, frames on the pool channel}
// mac_c = HMAC(secret, "llmdd-client" | nonce_s | nonce_c | ids), mac_s likewise with
// "llmdd-server". The client proves it holds the secret first, and the server says nothing
// about itself (process, pools) before that proof: a peer without the secret learns only that
// a listener is there and gets no MAC over nonces it chose to guess the secret offline.
// Before authentication frames are small and the server's deadline is its own.
//
// Thread-safety: every public method may be called from any thread.
#ifndef LLM_DATADIST_LINK_LINK_MANAGER_H_
#define LLM_DATADIST_LINK_LINK_MANAGER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "link/link.h"

namespace llm_datadist {

struct LinkTarget {
  uint64_t cluster_id = 0;
  std::string ip;
  uint16_t port = 0;
};

struct LinkOptions {
  std::string secret;  // empty: no secret
  // llmdd.Transport naming a transport: only it and tcp serve (SelectTransports), and no pool
  // channel is opened, even on one host.
  std::optional<TransportKind> forced;
  // Unix uids (besides our own) allowed on the same-host pool channel.
  std::vector<uint32_t> allowed_uids;
  // Refuse to listen on a non-loopback address without a secret (otherwise: one warning).
  bool require_secret = false;
  // This process's device, for transports that open the peer's device memory (cuda_ipc).
  int device_ordinal = 0;
  // llmdd.PollSpinUs: how long a wait on a link's connection polls before it sleeps (link.h).
  int64_t poll_spin_us = kDefaultPollSpinUs;
};

// Links (or unlinks) of one call run on at most this many threads; the rest queue (upstream's
// 16-thread pool). There is no limit on the clusters of one call.
constexpr size_t kParallelLinksPerCall = 16;
constexpr int64_t kHeartbeatIntervalMs = 100;
// The listener's limits on connections that have not finished their handshake: beyond them a
// new connection is closed at once. Per address, so that one flooding host does not lock out
// the others.
// (Per address above 16: upstream links 16 clusters per call, and decodes on one host share it.)
constexpr int kMaxConcurrentHandshakes = 128;
constexpr int kMaxHandshakesPerAddress = 32;
// A whole server-side handshake, whatever the client asks for; the hello must come sooner.
constexpr int64_t kServerHandshakeTimeoutMs = 10000;
constexpr int64_t kServerHelloTimeoutMs = 3000;
// Connections whose hello has not fully arrived are held by the listener thread itself (an fd
// and a few bytes each, no thread); past this many, the oldest is closed for a new one.
constexpr size_t kMaxPendingConnections = 1024;
// Largest handshake frame either side accepts (the biggest, with 16 regions, is ~2 KiB).
constexpr uint64_t kMaxHandshakePayload = 16 << 10;
// An accepted link whose peer sent nothing (not even a heartbeat) for this long, while this end
// waits on no reply from it, is dropped and its pins released: a partitioned or dead decoder.
constexpr int64_t kPeerDeadMs = 30 * kHeartbeatIntervalMs;

class LinkManager {
 public:
  using RegionProvider = std::function<std::vector<LocalRegion>()>;

  LinkManager(uint64_t cluster_id, LinkHandler *handler, RegionProvider regions, LinkOptions options);
  ~LinkManager();
  LinkManager(const LinkManager &) = delete;
  LinkManager &operator=(const LinkManager &) = delete;

  // Starts (or moves) the listener; same address: no-op.
  DetailedStatus StartListener(const std::string &ip, uint16_t port);
  void StopListener();
  bool listening() const;
  std::string listen_address() const;

  // One status per target, in order; links are made in parallel, each within timeout_ms.
  std::vector<DetailedStatus> LinkClusters(const std::vector<LinkTarget> &targets, int32_t timeout_ms);
  std::vector<DetailedStatus> UnlinkClusters(const std::vector<uint64_t> &cluster_ids, int32_t timeout_ms, bool force);

  // The link to a peer, or nullptr.
  std::shared_ptr<Link> Find(uint64_t cluster_id) const;
  size_t link_count() const;
  std::vector<uint64_t> linked_clusters() const;
  // How many links to or from `cluster_id` this manager has installed since it started. A
  // caller that must know whether a peer linked after some moment (the rank-table API's
  // listening side) compares two readings: the link itself may be gone by the time it looks.
  uint64_t links_installed(uint64_t cluster_id) const;
  // Runs fn on every link that is not closed (outside the manager's lock).
  void ForEachLink(const std::function<void(Link &)> &fn) const;
  // Closes every link without telling peers (finalize).
  void CloseAll();

  // Runs the server side of the handshake on an accepted connection (takes ownership of fd) and
  // returns when it is done. The listener's threads call it; tests and fuzzers may too.
  // `hello`: the first frame (header and payload) when the caller already read it from fd.
  void ServeConnection(int fd, std::string remote_address, std::vector<uint8_t> hello = {});
  // Connections in their handshake right now.
  int handshakes_running() const { return handshakes_running_.load(); }

 private:
  DetailedStatus LinkOne(const LinkTarget &target, int32_t timeout_ms);
  DetailedStatus UnlinkOne(uint64_t cluster_id, int32_t timeout_ms, bool force);
  DetailedStatus ClientHandshake(const LinkTarget &target, int fd, Deadline deadline, std::shared_ptr<Link> *out);
  void ServerHandshake(int fd, std::string remote_address, const std::vector<uint8_t> &hello_frame);
  // Starts a handshake thread for a connection whose hello arrived (closes it at the caps).
  void StartHandshake(int fd, const std::string &remote, std::vector<uint8_t> hello_frame);
  void ListenerLoop();
  void MaintenanceLoop();
  // Installs `link` as the link to its peer cluster. A live link from that cluster stays (a
  // peer cannot take another's place by naming its cluster id): then LLM_ALREADY_LINK and
  // `link` is not installed. A dead one (closed, broken or silent) is replaced.
  DetailedStatus Install(const std::shared_ptr<Link> &link);
  // The live link from `cluster_id`, if any.
  std::shared_ptr<Link> LiveLink(uint64_t cluster_id) const;
  bool PeerUidAllowed(int unix_fd, std::string *why) const;
  // Serializes link/unlink of one peer; LLM_PROCESSING_LINK when held past the deadline.
  std::shared_ptr<std::timed_mutex> PeerLock(uint64_t cluster_id);

  const uint64_t cluster_id_;
  LinkHandler *handler_;
  RegionProvider regions_;
  LinkOptions options_;

  mutable std::mutex links_mutex_;
  std::map<uint64_t, std::shared_ptr<Link>> links_;
  std::map<uint64_t, uint64_t> installs_;  // guarded by links_mutex_
  std::mutex peer_locks_mutex_;
  std::map<uint64_t, std::shared_ptr<std::timed_mutex>> peer_locks_;

  mutable std::mutex listener_mutex_;
  int listen_fd_ = -1;
  std::string listen_ip_;
  uint16_t listen_port_ = 0;
  std::atomic<bool> listener_stop_{false};
  std::thread listener_;

  struct Handshake {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex handshakes_mutex_;
  std::vector<Handshake> handshakes_;
  std::map<std::string, int> handshakes_per_address_;  // guarded by handshakes_mutex_
  std::atomic<int> handshakes_running_{0};

  std::atomic<bool> stop_{false};
  std::thread maintenance_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_LINK_MANAGER_H_
