// SPDX-License-Identifier: Apache-2.0
// Opening an optional shared library at run time (the CUDA driver, UCX's libucp): the one named
// by an environment variable when it is set, else the first of the default names that loads.
#ifndef LLM_DATADIST_COMMON_SHARED_LIBRARY_H_
#define LLM_DATADIST_COMMON_SHARED_LIBRARY_H_

#include <string>
#include <vector>

namespace llm_datadist {

struct OpenedLibrary {
  void *handle = nullptr;  // nullptr: nothing loaded (see errors)
  bool from_env = false;   // the environment variable named the library
  std::string env_value;   // what it named
  std::string errors;      // every dlopen error, "; "-separated, when nothing loaded
  // The file loaded, from the dynamic linker's link map (not from a symbol lookup: a preloaded
  // library that interposes dlsym would be reported instead); empty when the map has no name.
  std::string loaded_path;
};

// dlopen(flags) of $env_var when set and not empty, else of each of `defaults` in turn.
OpenedLibrary OpenSharedLibrary(const char *env_var, const std::vector<std::string> &defaults, int flags);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_COMMON_SHARED_LIBRARY_H_
