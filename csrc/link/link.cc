// SPDX-License-Identifier: Apache-2.0
#include "link/link.h"

#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/logging.h"

namespace llm_datadist {

namespace {

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
// Between two polls of a spinning wait: the CPU goes to whatever else is runnable here (on a
// busy machine, the thread this wait is for), and comes straight back when nothing is.
inline void SpinPause() { sched_yield(); }
// Once a frame has started arriving, the rest of it must come within this long.
constexpr int64_t kFrameBodyTimeoutMs = 60000;
// The link whose frame this thread is reading and acting on (for Send: a reply that finds the
// connection closed tells why reading stopped).
thread_local const Link *t_reading_link = nullptr;
// A reply payload up to this size is read in one call with the data that follows it.
constexpr uint64_t kOneReadPayload = 64 << 10;
}  // namespace

Link::Link(LinkSetup setup, int fd, LinkHandler *handler)
    : setup_(std::move(setup)),
      local_cluster_id_(setup_.local_cluster_id),
      peer_cluster_id_(setup_.peer_cluster_id),
      fd_(fd),
      handler_(handler),
      last_rx_ns_(NowNs()),
      last_tx_ns_(NowNs()) {}

Link::~Link() {
  Close(State::kClosed, "link closed");
  if (reader_.joinable()) {
    if (reader_.get_id() == std::this_thread::get_id()) {
      reader_.detach();  // cannot happen with the manager's reaping; never join oneself
    } else {
      reader_.join();
    }
  }
  close(fd_);
  // setup_.transports (which may read the mappings) go after this body; nothing reads then.
  for (const RemoteRegion &region : setup_.remote_regions)
    if (region.mapped != nullptr) munmap(const_cast<uint8_t *>(region.mapped), region.size);
}

const RemoteRegion *Link::RemotePool(uint8_t id) const {
  const RemoteRegion *found = nullptr;  // the last one announced with that id
  for (const RemoteRegion &r : setup_.remote_regions)
    if (r.id == id && r.kind != RegionKind::kCacheTable) found = &r;
  return found;
}

bool Link::HasOneSided() const {
  for (const auto &t : setup_.transports)
    if (t->caps().one_sided) return true;
  return false;
}

Transport *Link::TransportFor(const RemoteMemory &where, MemoryKind local_kind) const {
  for (const auto &t : setup_.transports)
    if (t->caps().one_sided && t->Reaches(where, local_kind)) return t.get();
  return nullptr;
}

bool Link::HasWriter() const {
  for (const auto &t : setup_.transports)
    if (t->caps().one_sided && t->caps().writes) return true;
  return false;
}

Transport *Link::WriterFor(const RemoteMemory &where, MemoryKind local_kind) const {
  for (const auto &t : setup_.transports)
    if (t->caps().one_sided && t->caps().writes && t->Reaches(where, local_kind)) return t.get();
  return nullptr;
}

std::optional<TableEntry> Link::LookupPublished(const TableKey &key) const {
  for (const auto &t : setup_.transports)
    if (t->caps().published_table) return t->LookupPublished(key);
  return std::nullopt;
}

bool Link::PeerOffersCudaIpc() const {
  if (!setup_.same_host) return false;
  for (const RemoteRegion &r : setup_.remote_regions)
    if (r.has_ipc) return true;
  return false;
}

bool Link::CudaIpcOpened() const {
  for (const auto &t : setup_.transports)
    if (t->caps().cuda_pool && t->opened()) return true;
  return false;
}

void Link::OnCacheRegistered(const RegisteredMemory &memory, Deadline deadline) {
  for (const auto &t : setup_.transports) {
    DetailedStatus told = t->OnCacheRegistered(memory, deadline);
    if (!told.ok())
      LLMDD_LOG(kWarning, "link ", local_cluster_id_, " -> ", peer_cluster_id_, ": ", t->name(),
                " could not announce cache ", memory.cache_id, " (", told.message(), "); it is streamed");
  }
}

void Link::OnCacheUnregistered(int64_t cache_id) {
  for (const auto &t : setup_.transports) t->OnCacheUnregistered(cache_id);
}

void Link::AddServed(uint64_t request_id, ServedTransfer served) {
  std::lock_guard<std::mutex> lock(served_mutex_);
  served_[request_id] = std::move(served);
}

std::optional<ServedTransfer> Link::TakeServed(uint64_t request_id) {
  std::lock_guard<std::mutex> lock(served_mutex_);
  auto it = served_.find(request_id);
  if (it == served_.end()) return std::nullopt;
  ServedTransfer served = std::move(it->second);
  served_.erase(it);
  return served;
}

size_t Link::served_count() const {
  std::lock_guard<std::mutex> lock(served_mutex_);
  return served_.size();
}

size_t Link::DropExpiredServed(Deadline now) {
  std::vector<ServedTransfer> expired;  // pins released outside the lock
  std::lock_guard<std::mutex> lock(served_mutex_);
  for (auto it = served_.begin(); it != served_.end();) {
    if (it->second.expires <= now) {
      expired.push_back(std::move(it->second));
      it = served_.erase(it);
    } else {
      ++it;
    }
  }
  return expired.size();
}

void Link::Start() {
  started_.store(true);
  reader_ = std::thread([this] { ReaderLoop(); });
}

std::string Link::close_reason() const {
  std::lock_guard<std::mutex> lock(reason_mutex_);
  return close_reason_;
}

int64_t Link::millis_since_rx() const { return (NowNs() - last_rx_ns_.load()) / 1000000; }

bool Link::PeerHungUp() const {
  if (unlinked_by_peer_.load()) return true;
  pollfd p{fd_, POLLRDHUP, 0};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

bool Link::SilentFor(int64_t ms) const {
  if (state() != State::kActive || in_frame_.load() || millis_since_rx() <= ms) return false;
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    if (!pending_.empty()) return false;
  }
  // Bytes waiting unread: the peer spoke, this process was the one not listening (stopped).
  int unread = 0;
  return ioctl(fd_, FIONREAD, &unread) == 0 && unread == 0;
}

DetailedStatus Link::Usable() const {
  State s = state();
  if (s == State::kActive) return DetailedStatus::Ok();
  return DetailedStatus(LLM_LINK_FAILED, detail::Concat("the link to cluster ", peer_cluster_id_, " is ",
                                                        s == State::kBroken ? "broken" : "closed", " (",
                                                        close_reason(), "); unlink it and link again"))
      .With("remote_cluster_id", peer_cluster_id_)
      .With("action", "relink");
}

void Link::Close(State state, const std::string &reason) {
  int expected = static_cast<int>(State::kActive);
  if (!state_.compare_exchange_strong(expected, static_cast<int>(state))) {
    // Already broken or closed; a later close still upgrades broken -> closed.
    if (state == State::kClosed) state_.store(static_cast<int>(State::kClosed));
    return;
  }
  {
    std::lock_guard<std::mutex> lock(reason_mutex_);
    close_reason_ = reason;
  }
  shutdown(fd_, SHUT_RDWR);  // wakes the reader and any sender
  {
    std::lock_guard<std::mutex> lock(park_mutex_);  // and a parked reader
    park_cv_.notify_all();
  }
  FailPending(Usable());
  // The peer closing its end after this end asked it to unlink is the unlink, not a failure.
  if (handler_ != nullptr && started_.load()) handler_->OnLinkDown(*this, state == State::kBroken && !unlinking_.load());
  LLMDD_LOG(kInfo, "link ", local_cluster_id_, " -> ", peer_cluster_id_, ": ", reason);
}

void Link::FailPending(const DetailedStatus &status) {
  std::map<uint64_t, std::shared_ptr<PendingCall>> pending;
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    pending.swap(pending_);
  }
  for (auto &entry : pending) {
    std::lock_guard<std::mutex> lock(entry.second->mutex);
    if (!entry.second->done) {
      entry.second->done = true;
      entry.second->status = status;
      entry.second->cv.notify_all();
    }
  }
}

DetailedStatus Link::Send(FrameType type, uint64_t request_id, const std::vector<uint8_t> &payload,
                          const std::vector<IoSpan> &data, uint64_t data_bytes, Deadline deadline) {
  FrameHeader header;
  header.type = static_cast<uint16_t>(type);
  header.request_id = request_id;
  header.payload_bytes = payload.size();
  header.data_bytes = data_bytes;
  std::vector<IoSpan> spans;
  spans.reserve(2 + data.size());
  spans.push_back({&header, sizeof(header)});
  if (!payload.empty()) spans.push_back({const_cast<uint8_t *>(payload.data()), payload.size()});
  spans.insert(spans.end(), data.begin(), data.end());
  std::lock_guard<std::mutex> lock(write_mutex_);
  bool closed = false;
  DetailedStatus status = SendSpans(fd_, spans, deadline, &closed);
  if (status.ok()) counters.data_bytes_sent.fetch_add(data_bytes);
  // Only the sends of a frame's reader (replies) speak for why reading stopped.
  if (closed && t_reading_link == this) peer_closed_.store(true);
  last_tx_ns_.store(NowNs());
  return status;
}

DetailedStatus Link::Call(FrameType type, const std::vector<uint8_t> &payload, const std::vector<IoSpan> &data,
                          const std::shared_ptr<PendingCall> &call, Deadline deadline) {
  LLMDD_RETURN_IF_ERROR(Usable());
  if (type == FrameType::kUnlinkRequest) unlinking_.store(true);
  const uint64_t id = NextRequestId();
  call->deadline = deadline;
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    pending_[id] = call;
  }
  uint64_t data_bytes = 0;
  for (const IoSpan &span : data) data_bytes += span.bytes;
  DetailedStatus sent = Send(type, id, payload, data, data_bytes, deadline);
  if (!sent.ok()) {
    {
      std::lock_guard<std::mutex> lock(pending_mutex_);
      pending_.erase(id);
    }
    if (sent.code() == LLM_TIMEOUT) {
      Break(detail::Concat("a request to the peer timed out while sending"));
      return DetailedStatus(LLM_TIMEOUT, detail::Concat("sending to cluster ", peer_cluster_id_,
                                                        " did not finish within the deadline; the link is now broken"))
          .With("remote_cluster_id", peer_cluster_id_);
    }
    Break(sent.message());
    return Usable();
  }
  // Still pending after it: another thread has the read side and completes the call (ReadUntilDone
  // already spun for the read side, or the reply, for poll_spin_us).
  const bool read_timed_out = !ReadUntilDone(*call, deadline);
  std::unique_lock<std::mutex> lock(call->mutex);
  if (read_timed_out || !call->cv.wait_until(lock, deadline, [&] { return call->done; })) {
    lock.unlock();
    {
      std::lock_guard<std::mutex> plock(pending_mutex_);
      pending_.erase(id);
    }
    // The reply may be half-received; the connection cannot be trusted any more.
    Break("a transfer timed out");
    std::lock_guard<std::mutex> relock(call->mutex);
    if (call->done && call->status.ok()) return call->status;  // completed in the race
    return DetailedStatus(LLM_TIMEOUT, detail::Concat("cluster ", peer_cluster_id_,
                                                      " did not answer within the deadline (sync_kv_timeout); the "
                                                      "link is broken until unlinked and linked again"))
        .With("remote_cluster_id", peer_cluster_id_);
  }
  return call->status;
}

DetailedStatus Link::ReceiveData(const std::vector<IoSpan> &spans, Deadline deadline) {
  bool closed = false;
  DetailedStatus status = RecvSpans(fd_, spans, deadline, &closed);
  if (closed) peer_closed_.store(true);
  return status;
}

DetailedStatus Link::DrainData(uint64_t bytes, Deadline deadline) {
  std::vector<uint8_t> sink(std::min<uint64_t>(bytes, 1 << 20));
  while (bytes > 0) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(bytes, sink.size()));
    bool closed = false;
    DetailedStatus status = RecvAll(fd_, sink.data(), n, deadline, &closed);
    if (closed) peer_closed_.store(true);
    LLMDD_RETURN_IF_ERROR(status);
    bytes -= n;
  }
  return DetailedStatus::Ok();
}

void Link::SendHeartbeatIfIdle(int64_t idle_ms) {
  if (state() != State::kActive) return;
  if ((NowNs() - last_tx_ns_.load()) / 1000000 < idle_ms) return;
  // Never wait on a stuck peer here: skip the beat when another sender holds the connection.
  std::unique_lock<std::mutex> lock(write_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  FrameHeader header;
  header.type = static_cast<uint16_t>(FrameType::kHeartbeat);
  ssize_t n = send(fd_, &header, sizeof(header), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n == static_cast<ssize_t>(sizeof(header))) {
    last_tx_ns_.store(NowNs());
  } else if (n > 0) {
    // A partial header would corrupt the stream: finish it within a short deadline or give up.
    DetailedStatus rest = SendAll(fd_, reinterpret_cast<uint8_t *>(&header) + n, sizeof(header) - n, DeadlineIn(1000));
    if (!rest.ok()) {
      lock.unlock();
      Break("heartbeat could not be sent");
    }
  }
}

void Link::NotifyClosing() {
  if (state() != State::kActive) return;
  std::unique_lock<std::mutex> lock(write_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // a sender is mid-frame: the closed connection will do
  FrameHeader header;
  header.type = static_cast<uint16_t>(FrameType::kUnlinkRequest);
  header.request_id = NextRequestId();
  // One non-blocking send: a frozen peer with a full buffer just sees the connection close.
  send(fd_, &header, sizeof(header), MSG_NOSIGNAL | MSG_DONTWAIT);
}

int Link::PollInput(int64_t spin_until_ns, int block_ms) {
  pollfd p{fd_, POLLIN, 0};
  while (NowNs() < spin_until_ns) {
    const int rc = poll(&p, 1, 0);
    if (rc != 0) return rc;
    SpinPause();
  }
  return poll(&p, 1, block_ms);
}

bool Link::ReaderShouldPark() {
  if (callers_reading_.load(std::memory_order_acquire) > 0) return true;
  if (NowNs() - last_caller_read_ns_.load(std::memory_order_acquire) >= kReaderParkMs * 1000000) return false;
  std::lock_guard<std::mutex> lock(pending_mutex_);
  return pending_.empty();  // a call that waits on someone else to read its reply needs the reader
}

void Link::WakeReaderIfNeeded() {
  bool needed = false;
  {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    needed = !pending_.empty();
  }
  if (!needed) {
    pollfd p{fd_, POLLIN, 0};
    needed = poll(&p, 1, 0) != 0;  // bytes (or a hang-up) no caller is reading
  }
  if (!needed) return;
  std::lock_guard<std::mutex> lock(park_mutex_);
  reader_wanted_ = true;
  park_cv_.notify_one();
}

bool Link::ReadUntilDone(PendingCall &call, Deadline deadline) {
  const int64_t spin_until = NowNs() + setup_.poll_spin_us * 1000;
  bool did_read = false;
  struct LeaveReading {  // once this caller is done reading: a parked reader may be needed now
    Link *link;
    const bool &did_read;
    ~LeaveReading() {
      if (did_read) link->WakeReaderIfNeeded();
    }
  } leave{this, did_read};
  while (!call.ready.load(std::memory_order_acquire) && state() == State::kActive) {
    std::unique_lock<std::mutex> reading(read_mutex_, std::try_to_lock);
    if (!reading.owns_lock()) {
      // The holder (another caller, or the reader between two frames) reads the reply if it
      // comes first; while the spin lasts, take the read side as soon as it is free, so that
      // this caller still reads its own reply (no hand-off, no wake-up).
      if (NowNs() >= spin_until) return true;
      SpinPause();
      continue;
    }
    struct Counted {
      std::atomic<int> &n;
      explicit Counted(std::atomic<int> &count) : n(count) { n.fetch_add(1, std::memory_order_acq_rel); }
      ~Counted() { n.fetch_sub(1, std::memory_order_acq_rel); }
    } counted(callers_reading_);
    did_read = true;
    if (call.ready.load(std::memory_order_acquire) || state() != State::kActive) return true;
    const int64_t left = MillisLeft(deadline);
    if (left < 0) return true;  // Call's wait ends at once, and its timeout path breaks the link
    // At most 100 ms at a time, so a caller that holds the read side notices a closed link.
    const int rc = PollInput(spin_until, static_cast<int>(std::min<int64_t>(left + 1, 100)));
    if (rc == 0) continue;
    if (rc < 0) {
      if (errno == EINTR) continue;
      return true;  // leave reading to the reader thread
    }
    bool ended = false;
    DetailedStatus failure = ReadOneFrameGuarded(deadline, &ended);
    // After the read (ReadFrames loads the count before it polls): bytes this read consumed
    // may be what woke the reader thread.
    caller_frames_.fetch_add(1, std::memory_order_release);
    last_caller_read_ns_.store(NowNs(), std::memory_order_release);
    if (ended) return true;
    if (!failure.ok()) {
      reading.unlock();
      // Past the deadline inside a frame (a peer frozen mid-reply): Call's timeout path breaks
      // the link and says LLM_TIMEOUT, as when the reply never started.
      if (failure.code() == LLM_TIMEOUT) return false;
      EndReading(failure);
      return true;
    }
  }
  return true;
}

void Link::CompleteCall(PendingCall &call, const FrameHeader &header, std::vector<uint8_t> reply,
                        const DetailedStatus &status) {
  std::lock_guard<std::mutex> lock(call.mutex);
  if (status.ok()) {
    call.reply_header = header;
    call.reply = std::move(reply);
  }
  call.done = true;
  call.status = status;
  call.ready.store(true, std::memory_order_release);
  call.cv.notify_all();
}

void Link::EndReading(const DetailedStatus &failure) {
  if (state() != State::kActive) return;
  // A connection the peer closed (between frames or inside one) reads as the peer leaving.
  const bool closed = failure.ok() || (failure.code() == LLM_LINK_FAILED && peer_closed_.load());
  const std::string reason = closed ? "peer closed the link" : failure.message();
  Close(State::kBroken, reason);
}

DetailedStatus Link::ReadOneFrameGuarded(Deadline deadline, bool *ended) {
  struct Reading {
    const Link *previous;
    explicit Reading(const Link *link) : previous(t_reading_link) { t_reading_link = link; }
    ~Reading() { t_reading_link = previous; }
  } reading(this);
  // Nothing a peer sends may end the process: an exception here fails this link, with a code.
  try {
    return ReadOneFrame(deadline, ended);
  } catch (const std::bad_alloc &) {
    return DetailedStatus(LLM_OUT_OF_MEMORY, "out of memory while serving the peer");
  } catch (const std::exception &e) {
    return DetailedStatus(LLM_FAILED, detail::Concat("internal error while serving the peer: ", e.what()));
  }
}

void Link::ReaderLoop() {
  EndReading(ReadFrames());
  // Owner-side pins die with the connection.
  std::map<uint64_t, ServedTransfer> served;
  {
    std::lock_guard<std::mutex> lock(served_mutex_);
    served.swap(served_);
  }
}

DetailedStatus Link::ReadFrames() {
  int64_t spin_until = 0;  // after a frame, the next one is polled for before sleeping
  while (state() == State::kActive) {
    if (ReaderShouldPark()) {
      std::unique_lock<std::mutex> lock(park_mutex_);
      const bool wanted = park_cv_.wait_for(lock, std::chrono::milliseconds(kReaderParkMs),
                                            [&] { return reader_wanted_ || state() != State::kActive; });
      reader_wanted_ = false;
      if (!wanted) continue;  // still parked, or back to the connection: asked again
    }
    // Loaded before the poll: a caller's read that ends after it (so possibly of the bytes that
    // wake this poll) changes the count.
    const uint64_t seen = caller_frames_.load(std::memory_order_acquire);
    int rc = PollInput(spin_until, 100);
    if (rc == 0) continue;
    if (rc < 0) {
      if (errno == EINTR) continue;
      return DetailedStatus(LLM_LINK_FAILED, "poll failed on the link");
    }
    // A caller reading the connection takes what woke this poll: stay out of its way (the loop
    // parks while it reads) rather than sleep on the lock and be woken when it is done.
    std::unique_lock<std::mutex> reading(read_mutex_, std::try_to_lock);
    if (!reading.owns_lock()) {
      SpinPause();
      continue;
    }
    if (state() != State::kActive) break;
    // A caller that held the read side meanwhile may have read what woke this thread.
    if (caller_frames_.load(std::memory_order_acquire) != seen) {
      pollfd again{fd_, POLLIN, 0};
      if (poll(&again, 1, 0) <= 0) continue;
    }
    bool ended = false;
    DetailedStatus failure = ReadOneFrameGuarded(DeadlineIn(kFrameBodyTimeoutMs), &ended);
    if (!failure.ok()) return failure;
    if (ended) break;
    spin_until = NowNs() + setup_.poll_spin_us * 1000;
  }
  return DetailedStatus::Ok();
}

DetailedStatus Link::ReadOneFrame(Deadline deadline, bool *ended) {
  FrameHeader header;
  std::vector<uint8_t> payload;
  bool closed = false;
  DetailedStatus failure = RecvAll(fd_, &header, sizeof(header), deadline, &closed);
  if (failure.ok()) failure = CheckFrameHeader(header, kMaxControlPayload);
  const auto type = static_cast<FrameType>(header.type);
  const bool reply = type == FrameType::kPullReply || type == FrameType::kPushReply || type == FrameType::kUnlinkReply;
  std::shared_ptr<PendingCall> call;
  if (failure.ok() && reply) {
    std::lock_guard<std::mutex> lock(pending_mutex_);
    auto it = pending_.find(header.request_id);
    if (it != pending_.end()) {
      call = it->second;
      pending_.erase(it);
    }
  }
  // A small reply and the data streamed after it arrive in one read, straight into place.
  const bool one_read = call != nullptr && header.data_bytes > 0 && header.data_bytes == call->recv_bytes &&
                        header.payload_bytes <= kOneReadPayload;
  bool data_read = false;
  if (failure.ok() && one_read) {
    payload.resize(header.payload_bytes);
    std::vector<IoSpan> spans;
    spans.reserve(1 + call->recv_spans.size());
    spans.push_back({payload.data(), payload.size()});
    spans.insert(spans.end(), call->recv_spans.begin(), call->recv_spans.end());
    failure = RecvSpans(fd_, spans, std::min(deadline, call->deadline), &closed);
    data_read = true;
  } else if (failure.ok()) {
    failure = RecvPayload(fd_, header, &payload, deadline, &closed);
  }
  if (closed) peer_closed_.store(true);
  if (!failure.ok()) {
    if (call != nullptr) CompleteCall(*call, header, {}, failure);
    return failure;
  }
  last_rx_ns_.store(NowNs());
  in_frame_.store(true);
  struct FrameDone {
    Link *link;
    ~FrameDone() {
      link->last_rx_ns_.store(NowNs());
      link->in_frame_.store(false);
    }
  } frame_done{this};
  if (type == FrameType::kHeartbeat) return DetailedStatus::Ok();
  if (reply) {
    DetailedStatus data_status;
    if (call == nullptr) {
      data_status = DrainData(header.data_bytes, DeadlineIn(kFrameBodyTimeoutMs));
    } else if (header.data_bytes > 0 && !data_read) {
      if (header.data_bytes != call->recv_bytes) {
        DetailedStatus wrong(LLM_LINK_FAILED, detail::Concat("peer sent ", header.data_bytes, " data bytes, expected ",
                                                             call->recv_bytes));
        CompleteCall(*call, header, {}, wrong);
        return wrong;
      }
      data_status = ReceiveData(call->recv_spans, call->deadline);
    }
    if (call != nullptr) CompleteCall(*call, header, std::move(payload), data_status);
    return data_status;
  }
  if (type == FrameType::kUnlinkRequest) {
    // Gone for the manager from now on: the peer may link again as soon as it has the reply.
    unlinked_by_peer_.store(true);
    // Best effort: the peer tears its end down whether or not the reply reaches it.
    (void)Send(FrameType::kUnlinkReply, header.request_id, {}, {}, 0, DeadlineIn(1000));
    Close(State::kClosed, "the peer unlinked");
    *ended = true;
    return DetailedStatus::Ok();
  }
  return handler_->OnPeerFrame(*this, header, payload);
}

}  // namespace llm_datadist
