// SPDX-License-Identifier: Apache-2.0
// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the link handshake's challenge-response:
// small enough to carry, so the core needs no crypto library.
#ifndef LLM_DATADIST_COMMON_SHA256_H_
#define LLM_DATADIST_COMMON_SHA256_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace llm_datadist {

using Sha256Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  void Update(const void *data, size_t len);
  Sha256Digest Finish();

 private:
  void Block(const uint8_t *block);
  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

Sha256Digest HmacSha256(const std::string &key, const void *data, size_t len);
// Constant-time comparison, so a MAC check leaks nothing through timing.
bool DigestEqual(const Sha256Digest &a, const Sha256Digest &b);
std::string DigestHex(const Sha256Digest &digest);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_COMMON_SHA256_H_
