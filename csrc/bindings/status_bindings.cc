// SPDX-License-Identifier: Apache-2.0
// The error table and the single C++ -> Python error translation.
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "common/logging.h"

namespace llm_datadist::bindings {

namespace {

bool InterpreterFinalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

py::list StatusTable() {
  py::list rows;
  for (const StatusInfo &info : AllStatusInfo()) {
    py::dict row;
    row["cpp_name"] = info.cpp_name;
    row["python_name"] = info.python_name;
    row["value"] = info.value;
    row["message"] = info.message;
    row["recoverable"] = info.recoverable;
    row["action"] = ActionName(info.action);
    row["http_status"] = info.http_status;
    row["grpc_code"] = info.grpc_code;
    row["suggestion"] = info.suggestion;
    row["python_only"] = info.python_only;
    rows.append(row);
  }
  return rows;
}

// Sends core log lines to Python's `logging` ("llm_datadist.core"). Lines logged while the
// interpreter is shutting down go to stderr instead.
void InstallPythonLogSink() {
  SetLogSink([](LogLevel level, const std::string &line) {
    if (!Py_IsInitialized() || InterpreterFinalizing()) {
      WriteLogLineToStderr(level, line);
      return;
    }
    py::gil_scoped_acquire gil;
    try {
      static const int kPyLevels[] = {10, 20, 30, 40};
      py::module_::import("llm_datadist._logging")
          .attr("emit_core_line")(kPyLevels[static_cast<int>(level)], line);
    } catch (py::error_already_set &e) {
      e.restore();
      PyErr_Clear();
      WriteLogLineToStderr(level, line);
    }
  });
}

// The Python side builds the LLMException (with the table's metadata) from the code, the
// message and the context. A native allocation failure is LLM_OUT_OF_MEMORY, like a full pool,
// not a Python MemoryError.
void RaiseCoreError(const DetailedStatus &status) {
  py::list context;
  for (const auto &kv : status.context()) context.append(py::make_tuple(kv.first, kv.second));
  py::object exc = py::module_::import("llm_datadist.status")
                       .attr("_exception_from_native")(static_cast<int64_t>(status.code()), status.message(), context);
  PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(exc.ptr())), exc.ptr());
}

// Call in a catch block: raises the LLMException of a StatusError or a bad_alloc; rethrows
// anything else.
void TranslateCoreError() {
  try {
    throw;
  } catch (const StatusError &error) {
    RaiseCoreError(error.status);
  } catch (const std::bad_alloc &) {
    RaiseCoreError(DetailedStatus(LLM_OUT_OF_MEMORY, "the native core could not allocate memory"));
  }
}

}  // namespace

void RegisterStatusBindings(py::module_ &m) {
  m.def("status_table", &StatusTable,
        "Every row of status_table.def, in order, as dicts (the one definition of the codes).");
  m.def("set_log_level", [](int level) { SetLogLevel(static_cast<LogLevel>(level)); },
        "Minimum core log level: 0 debug, 1 info, 2 warning, 3 error.");
  m.def("install_python_log_sink", &InstallPythonLogSink);
  m.def("reset_log_sink", [] { SetLogSink(nullptr); });
  m.def("throw_bad_alloc_for_test", [] { throw std::bad_alloc(); },
        "Raises what a failed native allocation raises (for the translator's test).");
  m.def("log_for_test", [](int level, const std::string &line) {
    LogLine(static_cast<LogLevel>(level), line);
  });

  // One translator for every core error (TranslateCoreError).
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (...) {
      TranslateCoreError();
    }
  });
}

void SetPythonErrorFromCurrentException() {
  try {
    throw;
  } catch (py::error_already_set &e) {
    e.restore();
  } catch (const py::builtin_exception &e) {
    e.set_error();
  } catch (...) {
    try {
      TranslateCoreError();
    } catch (const std::exception &e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    } catch (...) {
      PyErr_SetString(PyExc_RuntimeError, "unknown native exception");
    }
  }
}

}  // namespace llm_datadist::bindings
