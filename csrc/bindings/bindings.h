// SPDX-License-Identifier: Apache-2.0
// Registration functions of the _core module, one per binding file. Bindings only convert
// types, release the GIL and call into the core; errors become LLMException in one place
// (ThrowIfError, status_bindings.cc).
#ifndef LLMDD_BINDINGS_BINDINGS_H_
#define LLMDD_BINDINGS_BINDINGS_H_

#include <pybind11/pybind11.h>

#include "llm_datadist/status.h"

namespace llm_datadist::bindings {

namespace py = pybind11;

void RegisterStatusBindings(py::module_ &m);
void RegisterCudaBindings(py::module_ &m);
void RegisterUcxBindings(py::module_ &m);
void RegisterEngineBindings(py::module_ &m);

// Carries a failed DetailedStatus across the C++ -> Python boundary; the translator registered
// in RegisterStatusBindings turns it into llm_datadist.LLMException.
struct StatusError {
  DetailedStatus status;
};

// Throws StatusError when `status` is not ok. Call with the GIL held or released.
inline void ThrowIfError(DetailedStatus status) {
  if (!status.ok()) throw StatusError{std::move(status)};
}

// Sets the Python error that pybind11 would raise for the exception being handled (call it in
// a catch block, with the GIL held): for the few functions bound without pybind11's dispatcher
// (Engine.transfer), so that they raise exactly what the others do.
void SetPythonErrorFromCurrentException();

}  // namespace llm_datadist::bindings

#endif  // LLMDD_BINDINGS_BINDINGS_H_
