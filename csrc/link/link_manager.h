// SPDX-License-Identifier: Apache-2.0
// The control plane: a listener at listen_ip_info, the versioned handshake (with an optional
// shared-secret challenge-response), the set of links by peer cluster id, heartbeats, and the
// reaping of links the peer closed.
//
// Handshake (client C calls LinkClusters, server S listens), all frames over TCP:
//   C->S kHello      {client id, expected server id, nonce_c, has_secret, boot id, pid, timeout}
//   S->C kHelloReply {status, message, server id, nonce_s, has_secret, mac_s, boot id, pid,
//                     unix socket name (same-host pools offered), S's regions}
//   C->S kAuth       {mac_c, C's regions, will_do_shm}
//   [shm: C connects to S's abstract Unix socket, sends nonce_s and its memfds, S answers with
//    its memfds; both map the other's pools read-only]
//   S->C kLinkAck    {status, message, transport}
// mac_s = HMAC(secret, "llmdd-server" | nonce_c | nonce_s | ids), mac_c likewise with
// "llmdd-client": each side proves it holds the secret; the secret never crosses the wire.
//
// Thread-safety: every public method may be called from any thread.
#ifndef LLM_DATADIST_LINK_LINK_MANAGER_H_
#define LLM_DATADIST_LINK_LINK_MANAGER_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
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
  std::string secret;      // empty: no secret
  bool force_tcp = false;  // never use shm, even on one host
};

constexpr size_t kMaxClustersPerCall = 16;
constexpr int64_t kHeartbeatIntervalMs = 100;

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
  // Closes every link without telling peers (finalize).
  void CloseAll();

 private:
  DetailedStatus LinkOne(const LinkTarget &target, int32_t timeout_ms);
  DetailedStatus UnlinkOne(uint64_t cluster_id, int32_t timeout_ms, bool force);
  DetailedStatus ClientHandshake(const LinkTarget &target, int fd, Deadline deadline, std::shared_ptr<Link> *out);
  void ServerHandshake(int fd, std::string remote_address);
  void ListenerLoop();
  void MaintenanceLoop();
  void Install(const std::shared_ptr<Link> &link);
  // Serializes link/unlink of one peer; LLM_PROCESSING_LINK when held past the deadline.
  std::shared_ptr<std::timed_mutex> PeerLock(uint64_t cluster_id);

  const uint64_t cluster_id_;
  LinkHandler *handler_;
  RegionProvider regions_;
  LinkOptions options_;

  mutable std::mutex links_mutex_;
  std::map<uint64_t, std::shared_ptr<Link>> links_;
  std::mutex peer_locks_mutex_;
  std::map<uint64_t, std::shared_ptr<std::timed_mutex>> peer_locks_;

  mutable std::mutex listener_mutex_;
  int listen_fd_ = -1;
  std::string listen_ip_;
  uint16_t listen_port_ = 0;
  std::atomic<bool> listener_stop_{false};
  std::thread listener_;

  std::mutex handshakes_mutex_;
  std::vector<std::thread> handshakes_;
  std::atomic<int> handshakes_running_{0};

  std::atomic<bool> stop_{false};
  std::thread maintenance_;
};

}  // namespace llm_datadist

#endif  // LLM_DATADIST_LINK_LINK_MANAGER_H_
