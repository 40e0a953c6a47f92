// SPDX-License-Identifier: Apache-2.0
// Tests of the run-time UCX loader and the UCP wrapper (csrc/transport/ucx/).
//
// Which path runs depends on the environment, and each test checks one of two things, never
// neither:
//   * UCX available: batched gets and puts of host memory between two workers in this process
//     and with a peer process (llmdd_ucx_peer, next to this binary), every byte compared; a
//     frozen peer ends a get in LLM_TIMEOUT at its deadline, a killed one in LLM_LINK_FAILED;
//   * UCX unavailable: creating a worker fails with LLM_FEATURE_NOT_ENABLED naming the reason.
// LLMDD_TEST_EXPECT_UCX=1 / =0 makes the expectation explicit (tests/unit/test_ucx.py sets it),
// so a broken UCX cannot pass as "unavailable". UCX runs over tcp on the loopback device
// (UCX_TLS / UCX_NET_DEVICES are set unless the caller set them).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_harness.h"
#include "transport/ucx/ucp_api.h"
#include "transport/ucx/ucx_worker.h"
#include "ucx_peer/ucx_peer_protocol.h"

#define EXPECT_STATUS(expr, want)                                                         \
  do {                                                                                    \
    auto llmdd_st_ = (expr);                                                              \
    if (llmdd_st_.code() != (want))                                                       \
      LLMDD_FAIL_AT(#expr " returned " << llmdd_st_.ToString() << ", expected " #want);   \
  } while (0)

namespace llm_datadist::ucx {
namespace {

using llmdd_test::PatternByte;

Deadline In(int ms) { return Clock::now() + std::chrono::milliseconds(ms); }

int64_t MillisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

void UseLoopbackTcp() {
  setenv("UCX_TLS", "tcp", 0);
  setenv("UCX_NET_DEVICES", "lo", 0);
}

// Whether this run must see a usable UCX; fails the test when expectation and Probe disagree.
bool ExpectAvailable() {
  UseLoopbackTcp();
  const UcxInfo info = Probe();
  const char *expect = std::getenv("LLMDD_TEST_EXPECT_UCX");
  bool expected = info.available;
  if (expect != nullptr && expect[0] != '\0') expected = std::strcmp(expect, "0") != 0;
  if (expected != info.available) {
    LLMDD_FAIL_AT("UCX expected " << (expected ? "available" : "unavailable") << ", Probe says "
                                  << (info.available ? "available" : "unavailable: ")
                                  << info.reason);
  }
  return info.available;
}

// A process running llmdd_ucx_peer, killed on destruction.
class Peer {
 public:
  ~Peer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (to_ != nullptr) std::fclose(to_);
    if (from_ != nullptr) std::fclose(from_);
  }

  // Starts the peer with a `bytes` buffer and reads its first line.
  bool Start(size_t bytes) {
    ::signal(SIGPIPE, SIG_IGN);  // a peer that died must fail Ask(), not kill the test
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) return false;
    self[n] = '\0';
    std::string path(self);
    path = path.substr(0, path.rfind('/')) + "/llmdd_ucx_peer";
    const std::string size_arg = std::to_string(bytes);
    int in_pipe[2], out_pipe[2];
    if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0) return false;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in_pipe[0], 0);
      ::dup2(out_pipe[1], 1);
      char *args[] = {const_cast<char *>(path.c_str()), const_cast<char *>(size_arg.c_str()),
                      nullptr};
      ::execv(path.c_str(), args);
      _exit(127);
    }
    ::close(in_pipe[0]);
    ::close(out_pipe[1]);
    to_ = ::fdopen(in_pipe[1], "w");
    from_ = ::fdopen(out_pipe[0], "r");
    std::istringstream line(ReadLine());
    std::string address_hex, rkey_hex;
    line >> address_hex >> base_ >> size_ >> rkey_hex;
    address_ = llmdd_test::FromHex(address_hex);
    rkey_ = llmdd_test::FromHex(rkey_hex);
    if (address_.empty() || rkey_.empty() || size_ != bytes) {
      LLMDD_FAIL_AT("peer " << path << " did not start: '" << address_hex << "'");
      return false;
    }
    return true;
  }

  std::string Ask(const std::string &command) {
    std::fputs((command + "\n").c_str(), to_);
    std::fflush(to_);
    return ReadLine();
  }
  void Signal(int sig) { ::kill(pid_, sig); }
  void Reap() {
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  const std::string &address() const { return address_; }
  const std::string &rkey() const { return rkey_; }
  uint64_t base() const { return base_; }

 private:
  std::string ReadLine() {
    char buf[1 << 16];
    return std::fgets(buf, sizeof(buf), from_) != nullptr ? std::string(buf) : std::string();
  }

  pid_t pid_ = -1;
  FILE *to_ = nullptr;
  FILE *from_ = nullptr;
  std::string address_, rkey_;
  uint64_t base_ = 0;
  size_t size_ = 0;
};

// `count` ranges of 1..max_bytes at random offsets of a `region_bytes` region, packed back to
// back into a destination of the returned size (ops[i].local is an offset into it until
// Bind()).
struct Batch {
  std::vector<RmaOp> ops;
  std::vector<size_t> remote_offsets;
  std::vector<uint8_t> local;
};

Batch RandomBatch(size_t region_bytes, int count, size_t max_bytes, uint32_t seed) {
  std::mt19937 rng(seed);
  Batch b;
  size_t total = 0;
  std::vector<size_t> sizes;
  for (int i = 0; i < count; ++i) {
    const size_t bytes = 1 + rng() % max_bytes;
    const size_t offset = rng() % (region_bytes - bytes + 1);
    b.remote_offsets.push_back(offset);
    sizes.push_back(bytes);
    total += bytes;
  }
  b.local.assign(total, 0xEE);
  size_t at = 0;
  for (int i = 0; i < count; ++i) {
    b.ops.push_back({b.local.data() + at, 0, nullptr, sizes[i]});
    at += sizes[i];
  }
  return b;
}

void Bind(Batch *b, uint64_t remote_base, const RemoteKey *rkey) {
  for (size_t i = 0; i < b->ops.size(); ++i) {
    b->ops[i].remote_address = remote_base + b->remote_offsets[i];
    b->ops[i].rkey = rkey;
  }
}

// Every byte of a get batch against the pattern; returns the number of wrong bytes.
size_t WrongBytes(const Batch &b) {
  size_t wrong = 0;
  for (size_t i = 0; i < b.ops.size(); ++i) {
    const auto *p = static_cast<const uint8_t *>(b.ops[i].local);
    for (size_t j = 0; j < b.ops[i].bytes; ++j) {
      if (p[j] != PatternByte(b.remote_offsets[i] + j)) ++wrong;
    }
  }
  return wrong;
}

LLMDD_TEST(Ucx, ProbeDescribesTheLibrary) {
  const bool available = ExpectAvailable();
  const UcxInfo info = Probe();
  if (available) {
    EXPECT_TRUE(info.reason.empty());
    EXPECT_TRUE(!info.library_path.empty());
    EXPECT_TRUE(info.version.rfind("1.", 0) == 0);
    bool tcp = false;
    for (const std::string &t : info.transports) tcp = tcp || t.rfind("tcp/", 0) == 0;
    EXPECT_TRUE(tcp);  // UCX_TLS=tcp: the only transport it may list
  } else {
    EXPECT_TRUE(!info.reason.empty());
    EXPECT_TRUE(info.transports.empty());
    std::shared_ptr<UcxWorker> worker;
    DetailedStatus s = UcxWorker::Create({}, &worker);
    EXPECT_STATUS(s, LLM_FEATURE_NOT_ENABLED);
    EXPECT_TRUE(s.message().find(info.reason) != std::string::npos);
  }
}

LLMDD_TEST(Ucx, StatusMapping) {
  EXPECT_TRUE(CheckUcs(UCS_OK, "x").ok());
  EXPECT_STATUS(CheckUcs(UCS_ERR_CONNECTION_RESET, "x"), LLM_LINK_FAILED);
  EXPECT_STATUS(CheckUcs(UCS_ERR_UNREACHABLE, "x"), LLM_LINK_FAILED);
  EXPECT_STATUS(CheckUcs(static_cast<ucs_status_t>(-80), "x"), LLM_LINK_FAILED);  // ep timeout
  EXPECT_STATUS(CheckUcs(UCS_ERR_TIMED_OUT, "x"), LLM_TIMEOUT);
  EXPECT_STATUS(CheckUcs(UCS_ERR_NO_MEMORY, "x"), LLM_OUT_OF_MEMORY);
  EXPECT_STATUS(CheckUcs(UCS_ERR_UNSUPPORTED, "x"), LLM_FEATURE_NOT_ENABLED);
  EXPECT_STATUS(CheckUcs(UCS_ERR_INVALID_PARAM, "x"), LLM_FAILED);
  const DetailedStatus s = CheckUcs(UCS_ERR_CONNECTION_RESET, "ucp_get_nbx");
  EXPECT_TRUE(s.message().find("ucp_get_nbx failed: UCS_ERR_CONNECTION_RESET (-25)") == 0);
}

LLMDD_TEST(Ucx, GetAndPutBetweenTwoWorkersInProcess) {
  if (!ExpectAvailable()) return;
  std::shared_ptr<UcxWorker> owner, reader;
  UcxWorker::Options owner_options;
  owner_options.progress_thread = true;
  ASSERT_OK(UcxWorker::Create(owner_options, &owner));
  ASSERT_OK(UcxWorker::Create({}, &reader));
  constexpr size_t kRegion = 4 << 20;
  std::vector<uint8_t> pool(kRegion);
  for (size_t i = 0; i < kRegion; ++i) pool[i] = PatternByte(i);
  std::unique_ptr<MemoryRegion> region;
  ASSERT_OK(owner->MapMemory(pool.data(), pool.size(), MemoryKind::kHost, &region));
  EXPECT_EQ(region->base(), reinterpret_cast<uint64_t>(pool.data()));
  EXPECT_TRUE(!region->packed_rkey().empty());

  std::unique_ptr<Endpoint> ep;
  ASSERT_OK(reader->Connect(owner->address(), In(5000), &ep));
  std::unique_ptr<RemoteKey> rkey;
  ASSERT_OK(ep->UnpackRkey(region->packed_rkey(), &rkey));

  Batch gets = RandomBatch(kRegion, 300, 64 << 10, 1);
  Bind(&gets, region->base(), rkey.get());
  gets.ops.push_back({gets.local.data(), region->base(), rkey.get(), 0});  // skipped
  ASSERT_OK(ep->Get(gets.ops, In(10000)));
  EXPECT_EQ(WrongBytes(gets), size_t{0});

  // Puts: distinct, non-overlapping ranges of the owner's pool get new bytes.
  std::vector<uint8_t> source(256 << 10);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(i * 7 + 3);
  std::vector<RmaOp> puts;
  for (size_t i = 0; i < 16; ++i) {
    puts.push_back({source.data() + i * (16 << 10), region->base() + i * (200 << 10) + 5,
                    rkey.get(), 16 << 10});
  }
  ASSERT_OK(ep->Put(puts, In(10000)));
  size_t wrong = 0;
  for (size_t i = 0; i < 16; ++i) {
    wrong += std::memcmp(pool.data() + i * (200 << 10) + 5, source.data() + i * (16 << 10),
                         16 << 10) != 0;
  }
  EXPECT_EQ(wrong, size_t{0});
  EXPECT_EQ(pool[4], PatternByte(4));  // the byte before the first put is untouched
  EXPECT_TRUE(ep->health().ok());
}

LLMDD_TEST(Ucx, BadArgumentsAreRejected) {
  if (!ExpectAvailable()) return;
  std::shared_ptr<UcxWorker> a, b;
  UcxWorker::Options with_thread;
  with_thread.progress_thread = true;
  ASSERT_OK(UcxWorker::Create(with_thread, &a));
  ASSERT_OK(UcxWorker::Create(with_thread, &b));
  std::unique_ptr<Endpoint> ep, other;
  EXPECT_STATUS(a->Connect("", In(1000), &ep), LLM_PARAM_INVALID);
  EXPECT_STATUS(a->Connect(std::string(kMaxWorkerAddressBytes + 1, 'x'), In(1000), &ep),
                LLM_PARAM_INVALID);
  std::unique_ptr<MemoryRegion> region;
  EXPECT_STATUS(a->MapMemory(nullptr, 10, MemoryKind::kHost, &region), LLM_PARAM_INVALID);
  std::vector<uint8_t> pool(1 << 16);
  EXPECT_STATUS(b->MapMemory(pool.data(), 0, MemoryKind::kHost, &region), LLM_PARAM_INVALID);
  ASSERT_OK(b->MapMemory(pool.data(), pool.size(), MemoryKind::kHost, &region));
  ASSERT_OK(a->Connect(b->address(), In(5000), &ep));
  ASSERT_OK(a->Connect(b->address(), In(5000), &other));
  std::unique_ptr<RemoteKey> rkey, other_rkey;
  EXPECT_STATUS(ep->UnpackRkey("", &rkey), LLM_PARAM_INVALID);
  EXPECT_STATUS(ep->UnpackRkey(std::string(kMaxPackedRkeyBytes + 1, 'x'), &rkey),
                LLM_PARAM_INVALID);
  ASSERT_OK(ep->UnpackRkey(region->packed_rkey(), &rkey));
  ASSERT_OK(other->UnpackRkey(region->packed_rkey(), &other_rkey));
  std::vector<uint8_t> dst(100);
  EXPECT_STATUS(ep->Get({{dst.data(), region->base(), other_rkey.get(), 100}}, In(1000)),
                LLM_PARAM_INVALID);
  EXPECT_STATUS(ep->Get({{nullptr, region->base(), rkey.get(), 100}}, In(1000)),
                LLM_PARAM_INVALID);
  EXPECT_STATUS(ep->Get({{dst.data(), region->base(), nullptr, 100}}, In(1000)),
                LLM_PARAM_INVALID);
  ASSERT_OK(ep->Get({{dst.data(), region->base(), rkey.get(), 100}}, In(5000)));
}

LLMDD_TEST(Ucx, GetAndPutWithAPeerProcess) {
  if (!ExpectAvailable()) return;
  constexpr size_t kRegion = 8 << 20;
  Peer peer;
  ASSERT_TRUE(peer.Start(kRegion));
  std::shared_ptr<UcxWorker> reader;
  ASSERT_OK(UcxWorker::Create({}, &reader));
  std::unique_ptr<Endpoint> ep;
  ASSERT_OK(reader->Connect(peer.address(), In(5000), &ep));
  std::unique_ptr<RemoteKey> rkey;
  ASSERT_OK(ep->UnpackRkey(peer.rkey(), &rkey));
  for (uint32_t round = 0; round < 3; ++round) {
    Batch gets = RandomBatch(kRegion, 500, 128 << 10, 10 + round);
    Bind(&gets, peer.base(), rkey.get());
    ASSERT_OK(ep->Get(gets.ops, In(20000)));
    EXPECT_EQ(WrongBytes(gets), size_t{0});
  }
  std::vector<uint8_t> source(1 << 20);
  for (size_t i = 0; i < source.size(); ++i) source[i] = static_cast<uint8_t>(i * 13 + 1);
  std::vector<RmaOp> puts;
  for (size_t i = 0; i < 8; ++i) {
    puts.push_back({source.data() + i * (128 << 10), peer.base() + (1 << 20) + i * (128 << 10),
                    rkey.get(), 128 << 10});
  }
  ASSERT_OK(ep->Put(puts, In(20000)));
  const std::string want = std::to_string(llmdd_test::Fnv1a(source.data(), source.size())) + "\n";
  EXPECT_EQ(peer.Ask("hash " + std::to_string(1 << 20) + " " + std::to_string(1 << 20)), want);
}

LLMDD_TEST(Ucx, FrozenPeerEndsAGetInTimeout) {
  if (!ExpectAvailable()) return;
  constexpr size_t kRegion = 16 << 20;
  Peer peer;
  ASSERT_TRUE(peer.Start(kRegion));
  std::shared_ptr<UcxWorker> reader;
  ASSERT_OK(UcxWorker::Create({}, &reader));
  std::unique_ptr<Endpoint> ep;
  ASSERT_OK(reader->Connect(peer.address(), In(5000), &ep));
  std::unique_ptr<RemoteKey> rkey;
  ASSERT_OK(ep->UnpackRkey(peer.rkey(), &rkey));
  std::vector<uint8_t> dst(kRegion);
  ASSERT_OK(ep->Get({{dst.data(), peer.base(), rkey.get(), 4096}}, In(5000)));

  peer.Signal(SIGSTOP);
  const auto start = Clock::now();
  DetailedStatus s = ep->Get({{dst.data(), peer.base(), rkey.get(), kRegion}}, In(300));
  const int64_t took = MillisSince(start);
  EXPECT_STATUS(s, LLM_TIMEOUT);
  EXPECT_TRUE(took >= 290 && took < 300 + 2500);  // the deadline, plus the bounded cancel
  // The endpoint is closed: later calls fail at once instead of touching the frozen peer.
  EXPECT_STATUS(ep->health(), LLM_LINK_FAILED);
  EXPECT_STATUS(ep->Get({{dst.data(), peer.base(), rkey.get(), 16}}, In(5000)), LLM_LINK_FAILED);
  rkey.reset();  // after the endpoint closed: must be harmless
  // The owner, thawed, finds the get it was asked for cancelled and must keep serving. (Not
  // tested because UCX fails it: over tcp, gets are emulated by the owner's worker, and if the
  // requester's whole worker is gone before the owner answers, UCX 1.13 and 1.22 abort the
  // owner process in ucp_request_try_send, "Fatal: unexpected error"; see ucx_worker.h.)
  peer.Signal(SIGCONT);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const std::string answer = peer.Ask("hash 0 16");
  EXPECT_EQ(answer, std::to_string(llmdd_test::Fnv1a(dst.data(), 16)) + "\n");
}

LLMDD_TEST(Ucx, KilledPeerEndsAGetInLinkFailed) {
  if (!ExpectAvailable()) return;
  constexpr size_t kRegion = 1 << 20;
  Peer peer;
  ASSERT_TRUE(peer.Start(kRegion));
  std::shared_ptr<UcxWorker> reader;
  ASSERT_OK(UcxWorker::Create({}, &reader));
  std::unique_ptr<Endpoint> ep;
  ASSERT_OK(reader->Connect(peer.address(), In(5000), &ep));
  std::unique_ptr<RemoteKey> rkey;
  ASSERT_OK(ep->UnpackRkey(peer.rkey(), &rkey));
  std::vector<uint8_t> dst(kRegion);
  ASSERT_OK(ep->Get({{dst.data(), peer.base(), rkey.get(), kRegion}}, In(5000)));

  peer.Signal(SIGKILL);
  peer.Reap();
  const auto start = Clock::now();
  DetailedStatus s = ep->Get({{dst.data(), peer.base(), rkey.get(), kRegion}}, In(10000));
  const int64_t took = MillisSince(start);
  EXPECT_STATUS(s, LLM_LINK_FAILED);
  EXPECT_TRUE(took < 5000);  // a reset connection, not the deadline
  EXPECT_STATUS(ep->health(), LLM_LINK_FAILED);
}

}  // namespace
}  // namespace llm_datadist::ucx
