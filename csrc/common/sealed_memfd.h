// SPDX-License-Identifier: Apache-2.0
// Memory shared with peers on this host is a memfd sealed against shrinking and growing: a peer
// maps it read-only, and a shrink by its owner (ftruncate through /proc/PID/fd) would turn the
// peer's next read into SIGBUS. Readers map only memfds that carry these seals and are at least
// as large as announced.
#ifndef LLM_DATADIST_COMMON_SEALED_MEMFD_H_
#define LLM_DATADIST_COMMON_SEALED_MEMFD_H_

#include <cstdint>

#include "llm_datadist/status.h"

namespace llm_datadist {

// A memfd of `size` bytes, sealed (size fixed, seals fixed). Owns nothing on failure.
DetailedStatus CreateSealedMemfd(const char *name, uint64_t size, int *out_fd);
// Ok when `fd` is a memfd sealed against shrink and grow, holding at least `size` bytes.
DetailedStatus CheckSealedMemfd(int fd, uint64_t size);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_COMMON_SEALED_MEMFD_H_
