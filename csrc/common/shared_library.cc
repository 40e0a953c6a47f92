// SPDX-License-Identifier: Apache-2.0
#include "common/shared_library.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>

namespace llm_datadist {

OpenedLibrary OpenSharedLibrary(const char *env_var, const std::vector<std::string> &defaults, int flags) {
  OpenedLibrary out;
  const char *env_path = std::getenv(env_var);
  out.from_env = env_path != nullptr && env_path[0] != '\0';
  if (out.from_env) out.env_value = env_path;
  const std::vector<std::string> candidates = out.from_env ? std::vector<std::string>{out.env_value} : defaults;
  for (const std::string &candidate : candidates) {
    out.handle = dlopen(candidate.c_str(), flags);
    if (out.handle != nullptr) break;
    const char *err = dlerror();
    if (!out.errors.empty()) out.errors += "; ";
    out.errors += err != nullptr ? err : candidate + ": dlopen failed";
  }
  if (out.handle == nullptr) return out;
  struct link_map *map = nullptr;
  if (dlinfo(out.handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr && *map->l_name)
    out.loaded_path = map->l_name;
  return out;
}

}  // namespace llm_datadist
