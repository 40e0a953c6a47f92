// SPDX-License-Identifier: Apache-2.0
// Raw UCX get bandwidth and latency through csrc/transport/ucx/ between this process and a peer
// process (llmdd_ucx_peer, next to this binary) that owns the memory: the ceiling the ucx
// transport can reach before any of the engine's work. UCX's environment applies (for loopback
// tcp: UCX_TLS=tcp UCX_NET_DEVICES=lo).
//   llmdd_bench_ucx_get [REGION_MIB] [OP_KIB] [ROUNDS]
// Prints one JSON object: bandwidth of REGION_MIB-MiB batches of OP_KIB-KiB gets (best and
// median of ROUNDS), and the median and p99 latency of a single 4 KiB get.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "transport/ucx/ucx_worker.h"
#include "ucx_peer/ucx_peer_protocol.h"

using namespace llm_datadist;
using Clock = std::chrono::steady_clock;

int main(int argc, char **argv) {
  const size_t region_mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 64;
  const size_t op_kib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1024;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 10;
  const size_t region = region_mib << 20, op = op_kib << 10;

  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return 1;
  self[n] = '\0';
  std::string peer_path(self);
  peer_path = peer_path.substr(0, peer_path.rfind('/')) + "/llmdd_ucx_peer";
  int out_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(in_pipe, O_CLOEXEC) != 0) return 1;
  const std::string size_arg = std::to_string(region);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    char *args[] = {const_cast<char *>(peer_path.c_str()), const_cast<char *>(size_arg.c_str()),
                    nullptr};
    execv(peer_path.c_str(), args);
    _exit(127);
  }
  close(out_pipe[1]);
  close(in_pipe[0]);
  FILE *from = fdopen(out_pipe[0], "r");
  static char line[1 << 16];
  if (fgets(line, sizeof(line), from) == nullptr) return 1;
  std::istringstream fields(line);
  std::string address_hex, rkey_hex;
  uint64_t base = 0, size = 0;
  fields >> address_hex >> base >> size >> rkey_hex;

  auto fail = [&](const DetailedStatus &s) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return 1;
  };
  std::shared_ptr<ucx::UcxWorker> worker;
  DetailedStatus s = ucx::UcxWorker::Create({}, &worker);
  if (!s.ok()) return fail(s);
  std::unique_ptr<ucx::Endpoint> ep;
  s = worker->Connect(llmdd_test::FromHex(address_hex), Clock::now() + std::chrono::seconds(10), &ep);
  if (!s.ok()) return fail(s);
  std::unique_ptr<ucx::RemoteKey> rkey;
  s = ep->UnpackRkey(llmdd_test::FromHex(rkey_hex), &rkey);
  if (!s.ok()) return fail(s);

  std::vector<uint8_t> dst(region);
  std::vector<ucx::RmaOp> ops;
  for (size_t at = 0; at < region; at += op) {
    ops.push_back({dst.data() + at, base + at, rkey.get(), std::min(op, region - at)});
  }
  std::vector<double> gbps;
  for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms up
    const auto t0 = Clock::now();
    s = ep->Get(ops, Clock::now() + std::chrono::seconds(60));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (!s.ok()) return fail(s);
    if (r > 0) gbps.push_back(region / secs / 1e9);
  }
  size_t wrong = 0;
  for (size_t i = 0; i < region; ++i) wrong += dst[i] != llmdd_test::PatternByte(i);

  std::vector<double> lat_us;
  for (int i = 0; i < 2000; ++i) {
    const auto t0 = Clock::now();
    s = ep->Get({{dst.data(), base + (i * 4096) % (region - 4096), rkey.get(), 4096}},
                Clock::now() + std::chrono::seconds(10));
    if (!s.ok()) return fail(s);
    lat_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(gbps.begin(), gbps.end());
  std::sort(lat_us.begin(), lat_us.end());
  const char *tls = std::getenv("UCX_TLS");
  std::printf(
      "{\"bench\": \"ucx_get\", \"ucx_tls\": \"%s\", \"region_bytes\": %zu, \"op_bytes\": %zu, "
      "\"rounds\": %d, \"gbps_best\": %.3f, \"gbps_median\": %.3f, \"lat_4k_us_median\": %.1f, "
      "\"lat_4k_us_p99\": %.1f, \"wrong_bytes\": %zu}\n",
      tls != nullptr ? tls : "", region, op, rounds, gbps.back(), gbps[gbps.size() / 2],
      lat_us[lat_us.size() / 2], lat_us[lat_us.size() * 99 / 100], wrong);
  ep.reset();
  rkey.reset();
  worker.reset();
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return wrong == 0 ? 0 : 1;
}
