// SPDX-License-Identifier: Apache-2.0
// The far end of tests/cpp/ucx_test.cc: owns a buffer mapped with UCX and serves it.
//
//   llmdd_ucx_peer BYTES
// Fills BYTES bytes with PatternByte(i), maps them (host memory) on a worker with a progress
// thread, and prints one line: "<worker address hex> <base> <bytes> <packed rkey hex>". Then
// answers commands on stdin, one per line:
//   hash OFFSET LENGTH  -> prints the FNV-1a hash of the range (to check puts)
//   exit                -> exits 0 (so does end of input)
// The test freezes (SIGSTOP) or kills (SIGKILL) this process to fail a transfer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "transport/ucx/ucx_worker.h"
#include "ucx_peer/ucx_peer_protocol.h"

using namespace llm_datadist;

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: llmdd_ucx_peer BYTES\n";
    return 2;
  }
  const size_t bytes = std::strtoull(argv[1], nullptr, 10);
  std::vector<uint8_t> buffer(bytes);
  for (size_t i = 0; i < bytes; ++i) buffer[i] = llmdd_test::PatternByte(i);

  std::shared_ptr<ucx::UcxWorker> worker;
  ucx::UcxWorker::Options options;
  options.progress_thread = true;
  DetailedStatus s = ucx::UcxWorker::Create(options, &worker);
  if (!s.ok()) {
    std::cout << "error " << s.ToString() << std::endl;
    return 1;
  }
  std::unique_ptr<ucx::MemoryRegion> region;
  s = worker->MapMemory(buffer.data(), bytes, ucx::MemoryKind::kHost, &region);
  if (!s.ok()) {
    std::cout << "error " << s.ToString() << std::endl;
    return 1;
  }
  std::cout << llmdd_test::ToHex(worker->address()) << " " << region->base() << " "
            << region->size() << " " << llmdd_test::ToHex(region->packed_rkey()) << std::endl;

  std::string command;
  while (std::cin >> command) {
    if (command == "hash") {
      size_t offset = 0, length = 0;
      std::cin >> offset >> length;
      if (offset > bytes || length > bytes - offset) {
        std::cout << "error range" << std::endl;
        continue;
      }
      std::cout << llmdd_test::Fnv1a(buffer.data() + offset, length) << std::endl;
    } else if (command == "exit") {
      break;
    }
  }
  return 0;
}
