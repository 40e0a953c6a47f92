// SPDX-License-Identifier: Apache-2.0
// What tests/cpp/ucx_test.cc and its peer process (ucx_peer.cc) agree on.
#ifndef LLMDD_TESTS_CPP_UCX_PEER_PROTOCOL_H_
#define LLMDD_TESTS_CPP_UCX_PEER_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace llmdd_test {

// The peer's buffer holds PatternByte(i) at offset i: not periodic at any power of two, so a
// range read from the wrong offset does not compare equal.
inline uint8_t PatternByte(size_t i) {
  return static_cast<uint8_t>((i * 131u + 7u) ^ (i >> 9) ^ (i >> 17));
}

inline uint64_t Fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

inline std::string ToHex(const std::string &bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

// Empty on malformed input.
inline std::string FromHex(const std::string &hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return {};
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out.push_back(static_cast<char>(hi << 4 | lo));
  }
  return out;
}

}  // namespace llmdd_test

#endif  // LLMDD_TESTS_CPP_UCX_PEER_PROTOCOL_H_
