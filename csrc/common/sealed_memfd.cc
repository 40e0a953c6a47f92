// SPDX-License-Identifier: Apache-2.0
#include "common/sealed_memfd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace llm_datadist {

namespace {
constexpr int kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW;
}  // namespace

DetailedStatus CreateSealedMemfd(const char *name, uint64_t size, int *out_fd) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return DetailedStatus(LLM_OUT_OF_MEMORY, detail::Concat("memfd_create(", name, ") failed: ", std::strerror(errno)));
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 || fcntl(fd, F_ADD_SEALS, kRequiredSeals | F_SEAL_SEAL) != 0) {
    const int err = errno;
    close(fd);
    return DetailedStatus(LLM_OUT_OF_MEMORY,
                          detail::Concat("cannot size and seal ", name, " (", size, " bytes): ", std::strerror(err)));
  }
  *out_fd = fd;
  return DetailedStatus::Ok();
}

DetailedStatus CheckSealedMemfd(int fd, uint64_t size) {
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & kRequiredSeals) != kRequiredSeals)
    return DetailedStatus(LLM_LINK_FAILED, "the peer shared memory that is not sealed against resizing; refused");
  struct stat st {};
  if (fstat(fd, &st) != 0 || st.st_size < 0 || static_cast<uint64_t>(st.st_size) < size)
    return DetailedStatus(LLM_LINK_FAILED, detail::Concat("the peer shared ", st.st_size, " bytes of memory but announced ",
                                                          size, "; refused"));
  return DetailedStatus::Ok();
}

}  // namespace llm_datadist
