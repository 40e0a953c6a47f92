// SPDX-License-Identifier: Apache-2.0
#include "link/wire.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>

namespace llm_datadist {

namespace {

// The peer closed its end (a read or write of 0 bytes); `*peer_closed` (when given) says so to a
// caller that treats that apart from other failures.
DetailedStatus Closed(const char *what, bool *peer_closed) {
  if (peer_closed != nullptr) *peer_closed = true;
  return DetailedStatus(LLM_LINK_FAILED, detail::Concat("peer closed the connection during ", what));
}

DetailedStatus SysError(const char *what, int err) {
  return DetailedStatus(LLM_LINK_FAILED, detail::Concat(what, " failed: ", std::strerror(err)));
}

// Waits for `events` on fd until the deadline.
DetailedStatus WaitFd(int fd, short events, Deadline deadline, const char *what) {
  for (;;) {
    int64_t left = MillisLeft(deadline);
    if (left < 0) left = 0;
    pollfd p{fd, events, 0};
    int rc = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, INT_MAX)));
    if (rc > 0) {
      if ((p.revents & (POLLERR | POLLNVAL)) != 0 && (p.revents & events) == 0) return SysError(what, ECONNRESET);
      return DetailedStatus::Ok();
    }
    if (rc == 0) return DetailedStatus(LLM_TIMEOUT, detail::Concat(what, " timed out"));
    if (errno != EINTR) return SysError("poll", errno);
  }
}

bool FillSockaddr(const std::string &ip, uint16_t port, sockaddr_storage *addr, socklen_t *len) {
  std::memset(addr, 0, sizeof(*addr));
  auto *v4 = reinterpret_cast<sockaddr_in *>(addr);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(addr);
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

socklen_t AbstractAddr(const std::string &name, sockaddr_un *addr) {
  std::memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t n = std::min(name.size(), sizeof(addr->sun_path) - 1);
  std::memcpy(addr->sun_path + 1, name.data(), n);  // leading NUL: abstract namespace
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

}  // namespace

DetailedStatus SetNonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return SysError("fcntl", errno);
  return DetailedStatus::Ok();
}

DetailedStatus SendAll(int fd, const void *data, size_t n, Deadline deadline) {
  const auto *p = static_cast<const uint8_t *>(data);
  while (n > 0) {
    ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
    if (sent > 0) {
      p += sent;
      n -= static_cast<size_t>(sent);
      continue;
    }
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      LLMDD_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline, "send"));
      continue;
    }
    if (sent < 0 && errno == EINTR) continue;
    return sent == 0 ? Closed("send", nullptr) : SysError("send", errno);
  }
  return DetailedStatus::Ok();
}

DetailedStatus RecvAll(int fd, void *data, size_t n, Deadline deadline, bool *peer_closed) {
  auto *p = static_cast<uint8_t *>(data);
  while (n > 0) {
    ssize_t got = recv(fd, p, n, 0);
    if (got > 0) {
      p += got;
      n -= static_cast<size_t>(got);
      continue;
    }
    if (got == 0) return Closed("receive", peer_closed);
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      LLMDD_RETURN_IF_ERROR(WaitFd(fd, POLLIN, deadline, "receive"));
      continue;
    }
    if (errno == EINTR) continue;
    return SysError("recv", errno);
  }
  return DetailedStatus::Ok();
}

namespace {
template <bool kSend>
DetailedStatus TransferSpans(int fd, const std::vector<IoSpan> &spans, Deadline deadline, bool *peer_closed) {
  std::vector<iovec> iov;
  iov.reserve(std::min<size_t>(spans.size(), IOV_MAX));
  size_t next = 0;      // next span not yet in iov
  size_t consumed = 0;  // bytes of spans[next_partial] already done
  while (next < spans.size() || !iov.empty()) {
    while (iov.size() < IOV_MAX && next < spans.size()) {
      if (spans[next].bytes > 0)
        iov.push_back({static_cast<uint8_t *>(spans[next].data) + consumed, spans[next].bytes - consumed});
      consumed = 0;
      ++next;
    }
    if (iov.empty()) break;
    ssize_t done = kSend ? [&] {
      msghdr msg{};
      msg.msg_iov = iov.data();
      msg.msg_iovlen = iov.size();
      return sendmsg(fd, &msg, MSG_NOSIGNAL);
    }()
                         : readv(fd, iov.data(), static_cast<int>(iov.size()));
    if (done > 0) {
      size_t left = static_cast<size_t>(done);
      size_t i = 0;
      while (i < iov.size() && left >= iov[i].iov_len) {
        left -= iov[i].iov_len;
        ++i;
      }
      iov.erase(iov.begin(), iov.begin() + static_cast<long>(i));
      if (left > 0) {
        iov[0].iov_base = static_cast<uint8_t *>(iov[0].iov_base) + left;
        iov[0].iov_len -= left;
      }
      continue;
    }
    if (done == 0) return Closed(kSend ? "send" : "receive", peer_closed);
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      LLMDD_RETURN_IF_ERROR(WaitFd(fd, kSend ? POLLOUT : POLLIN, deadline, kSend ? "send" : "receive"));
      continue;
    }
    if (errno == EINTR) continue;
    return SysError(kSend ? "sendmsg" : "readv", errno);
  }
  return DetailedStatus::Ok();
}
}  // namespace

DetailedStatus SendSpans(int fd, const std::vector<IoSpan> &spans, Deadline deadline, bool *peer_closed) {
  return TransferSpans<true>(fd, spans, deadline, peer_closed);
}

DetailedStatus RecvSpans(int fd, const std::vector<IoSpan> &spans, Deadline deadline, bool *peer_closed) {
  return TransferSpans<false>(fd, spans, deadline, peer_closed);
}

DetailedStatus SendFrame(int fd, FrameType type, uint64_t request_id, const std::vector<uint8_t> &payload,
                         uint64_t data_bytes, Deadline deadline) {
  FrameHeader header;
  header.type = static_cast<uint16_t>(type);
  header.request_id = request_id;
  header.payload_bytes = payload.size();
  header.data_bytes = data_bytes;
  std::vector<IoSpan> spans{{&header, sizeof(header)}};
  if (!payload.empty()) spans.push_back({const_cast<uint8_t *>(payload.data()), payload.size()});
  return SendSpans(fd, spans, deadline);
}

DetailedStatus CheckFrameHeader(const FrameHeader &header, uint64_t max_payload) {
  LLMDD_CHECK(header.magic == kFrameMagic, LLM_LINK_FAILED, "malformed frame (bad magic 0x", std::hex, header.magic,
              "): the peer is not an llm_datadist link");
  LLMDD_CHECK(header.version == kProtocolVersion, LLM_LINK_FAILED, "incompatible link protocol: peer speaks version ",
              header.version, ", this process speaks version ", kProtocolVersion);
  LLMDD_CHECK(header.payload_bytes <= std::min(max_payload, kMaxControlPayload), LLM_LINK_FAILED,
              "malformed frame (payload of ", header.payload_bytes, " bytes, at most ",
              std::min(max_payload, kMaxControlPayload), " here)");
  return DetailedStatus::Ok();
}

DetailedStatus RecvFrame(int fd, FrameHeader *header, std::vector<uint8_t> *payload, Deadline deadline,
                         uint64_t max_payload, bool *peer_closed) {
  LLMDD_RETURN_IF_ERROR(RecvAll(fd, header, sizeof(*header), deadline, peer_closed));
  LLMDD_RETURN_IF_ERROR(CheckFrameHeader(*header, max_payload));
  return RecvPayload(fd, *header, payload, deadline, peer_closed);
}

DetailedStatus RecvPayload(int fd, const FrameHeader &header, std::vector<uint8_t> *payload, Deadline deadline,
                           bool *peer_closed) {
  // Grown as the payload arrives (in steps of at most kStep): memory follows bytes received.
  constexpr uint64_t kStep = 1 << 20;
  payload->clear();
  while (payload->size() < header.payload_bytes) {
    const size_t have = payload->size();
    const size_t step = static_cast<size_t>(std::min<uint64_t>(header.payload_bytes - have, kStep));
    payload->resize(have + step);
    LLMDD_RETURN_IF_ERROR(RecvAll(fd, payload->data() + have, step, deadline, peer_closed));
  }
  return DetailedStatus::Ok();
}

DetailedStatus ConnectTcp(const std::string &ip, uint16_t port, Deadline deadline, int *out_fd) {
  sockaddr_storage addr;
  socklen_t len = 0;
  LLMDD_CHECK(FillSockaddr(ip, port, &addr, &len), LLM_PARAM_INVALID, "\"", ip, "\" is not an IP address");
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SysError("socket", errno);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  int rc = connect(fd, reinterpret_cast<sockaddr *>(&addr), len);
  if (rc != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return DetailedStatus(LLM_LINK_FAILED, detail::Concat("connect to ", ip, ":", port, " failed: ", std::strerror(err)));
  }
  if (rc != 0) {
    DetailedStatus wait = WaitFd(fd, POLLOUT, deadline, "connect");
    int err = 0;
    socklen_t err_len = sizeof(err);
    if (wait.ok()) getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
    if (!wait.ok() || err != 0) {
      close(fd);
      if (!wait.ok())
        return DetailedStatus(LLM_LINK_FAILED, detail::Concat("connect to ", ip, ":", port, " timed out"));
      return DetailedStatus(LLM_LINK_FAILED, detail::Concat("connect to ", ip, ":", port, " failed: ", std::strerror(err)));
    }
  }
  *out_fd = fd;
  return DetailedStatus::Ok();
}

DetailedStatus ListenTcp(const std::string &ip, uint16_t port, int *out_fd, uint16_t *bound_port) {
  sockaddr_storage addr;
  socklen_t len = 0;
  LLMDD_CHECK(FillSockaddr(ip, port, &addr, &len), LLM_PARAM_INVALID, "listen ip \"", ip, "\" is not an IP address");
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SysError("socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr *>(&addr), len) != 0 || listen(fd, 128) != 0) {
    int err = errno;
    close(fd);
    return DetailedStatus(LLM_PARAM_INVALID,
                          detail::Concat("cannot listen on ", ip, ":", port, ": ", std::strerror(err)));
  }
  sockaddr_storage bound;
  socklen_t bound_len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr *>(&bound), &bound_len);
  *bound_port = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in *>(&bound)->sin_port
                                                 : reinterpret_cast<sockaddr_in6 *>(&bound)->sin6_port);
  *out_fd = fd;
  return DetailedStatus::Ok();
}

DetailedStatus ListenUnixAbstract(const std::string &name, int *out_fd) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SysError("socket(AF_UNIX)", errno);
  sockaddr_un addr;
  socklen_t len = AbstractAddr(name, &addr);
  if (bind(fd, reinterpret_cast<sockaddr *>(&addr), len) != 0 || listen(fd, 4) != 0) {
    int err = errno;
    close(fd);
    return SysError("listen(AF_UNIX)", err);
  }
  *out_fd = fd;
  return DetailedStatus::Ok();
}

DetailedStatus ConnectUnixAbstract(const std::string &name, Deadline deadline, int *out_fd) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SysError("socket(AF_UNIX)", errno);
  sockaddr_un addr;
  socklen_t len = AbstractAddr(name, &addr);
  if (connect(fd, reinterpret_cast<sockaddr *>(&addr), len) != 0 && errno != EINPROGRESS) {
    int err = errno;
    close(fd);
    return SysError("connect(AF_UNIX)", err);
  }
  DetailedStatus wait = WaitFd(fd, POLLOUT, deadline, "connect(AF_UNIX)");
  if (!wait.ok()) {
    close(fd);
    return wait;
  }
  *out_fd = fd;
  return DetailedStatus::Ok();
}

DetailedStatus SendFds(int sock, const std::vector<int> &fds, const std::vector<uint8_t> &payload, Deadline deadline) {
  uint32_t size = static_cast<uint32_t>(payload.size());
  std::vector<uint8_t> body(sizeof(size) + payload.size());
  std::memcpy(body.data(), &size, sizeof(size));
  if (!payload.empty()) std::memcpy(body.data() + sizeof(size), payload.data(), payload.size());
  iovec iov{body.data(), body.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * std::max<size_t>(fds.size(), 1)), 0);
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    ssize_t sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (sent == static_cast<ssize_t>(body.size())) return DetailedStatus::Ok();
    if (sent >= 0) return DetailedStatus(LLM_LINK_FAILED, "short send of descriptors");
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      LLMDD_RETURN_IF_ERROR(WaitFd(sock, POLLOUT, deadline, "send descriptors"));
      continue;
    }
    if (errno != EINTR) return SysError("sendmsg(SCM_RIGHTS)", errno);
  }
}

DetailedStatus RecvFds(int sock, std::vector<int> *fds, std::vector<uint8_t> *payload, size_t max_fds,
                       Deadline deadline) {
  std::vector<uint8_t> body(64 * 1024);
  std::vector<char> control(CMSG_SPACE(sizeof(int) * max_fds), 0);
  iovec iov{body.data(), body.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t got;
  for (;;) {
    got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (got >= 0) break;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      LLMDD_RETURN_IF_ERROR(WaitFd(sock, POLLIN, deadline, "receive descriptors"));
      continue;
    }
    if (errno != EINTR) return SysError("recvmsg(SCM_RIGHTS)", errno);
  }
  fds->clear();
  for (cmsghdr *cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      size_t n = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const int *p = reinterpret_cast<const int *>(CMSG_DATA(cmsg));
      fds->insert(fds->end(), p, p + n);
    }
  }
  uint32_t size = 0;
  if (got < static_cast<ssize_t>(sizeof(size)) || (msg.msg_flags & MSG_CTRUNC) != 0) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return DetailedStatus(LLM_LINK_FAILED, "malformed descriptor message");
  }
  std::memcpy(&size, body.data(), sizeof(size));
  if (size > static_cast<size_t>(got) - sizeof(size)) {
    for (int fd : *fds) close(fd);
    fds->clear();
    return DetailedStatus(LLM_LINK_FAILED, "malformed descriptor message");
  }
  payload->assign(body.begin() + sizeof(size), body.begin() + sizeof(size) + size);
  return DetailedStatus::Ok();
}

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  if (id.empty()) return id;  // unknown boot: never "one host"
  // The network namespace is part of the host's identity: the abstract Unix sockets that carry
  // the shm channel exist per network namespace, so two namespaces cannot share pools the way
  // two processes of one host do, and distinct namespaces are how the tests model two hosts.
  // Without the namespace (no /proc/self/ns/net) the id is unknown too.
  struct stat ns {};
  if (stat("/proc/self/ns/net", &ns) != 0) return std::string();
  return detail::Concat(id, "/netns:", static_cast<unsigned long long>(ns.st_dev), ":",
                        static_cast<unsigned long long>(ns.st_ino));
}

std::vector<uint8_t> RandomNonce() {
  std::vector<uint8_t> nonce(16);
  size_t filled = 0;
  while (filled < nonce.size()) {
    ssize_t n = getrandom(nonce.data() + filled, nonce.size() - filled, 0);
    if (n > 0) filled += static_cast<size_t>(n);
    else if (errno != EINTR) break;
  }
  return nonce;
}

}  // namespace llm_datadist
