// SPDX-License-Identifier: Apache-2.0
// The llm_datadist._core extension module: registration only; each area binds itself.
#include "bindings/bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native core of llm_datadist (internal: use the llm_datadist package).";
  // The package's one version: pyproject.toml's, passed in by CMake (llm_datadist.__version__).
  m.attr("__version__") = LLMDD_VERSION;
  llm_datadist::bindings::RegisterStatusBindings(m);
  llm_datadist::bindings::RegisterCudaBindings(m);
  llm_datadist::bindings::RegisterUcxBindings(m);
  llm_datadist::bindings::RegisterEngineBindings(m);
}
