// SPDX-License-Identifier: Apache-2.0
// Status codes and the rich status the core returns internally.
//
// `Status` is ge::Status (a plain uint32_t) with upstream LLM-DataDist's numbers, so code written
// against upstream's `llm_datadist::Status` or `ge::Status` compiles and compares unchanged.
// The constants, their messages and their recovery metadata all come from status_table.def.
//
// `DetailedStatus` is what the core's internal functions return: the code plus a message that
// names the concrete values, plus key/value context (operation, cluster, key, block index).
// Thread-safety: values; no shared state.
#ifndef LLM_DATADIST_STATUS_H_
#define LLM_DATADIST_STATUS_H_

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "llm_datadist/ge_types.h"

namespace llm_datadist {

using ge::Status;

#define LLMDD_STATUS(cpp_name, py_name, value, msg, recoverable, action, http, grpc, hint) \
  constexpr Status cpp_name = value;
#define LLMDD_PY_STATUS(cpp_name, py_name, value, msg, recoverable, action, http, grpc, hint)
#include "llm_datadist/status_table.def"
#undef LLMDD_PY_STATUS
#undef LLMDD_STATUS

// What a caller should do about a failure. The Python names are the lower-case forms
// ("retry_now", "fix_call", ...), see ActionName().
enum class RecoveryAction : uint8_t {
  kNone,
  kRetryNow,
  kRetryLater,
  kRelink,
  kFixCall,
  kFreeMemory,
  kFatal,
};

// One row of status_table.def.
struct StatusInfo {
  const char *cpp_name;
  const char *python_name;  // "" when upstream Python has no member for the code
  int64_t value;            // -1 for the Python-only LLM_UNKNOWN_ERROR
  const char *message;
  bool recoverable;
  RecoveryAction action;
  int http_status;
  const char *grpc_code;
  const char *suggestion;
  bool python_only;
};

// Every row of the table, in table order.
const std::vector<StatusInfo> &AllStatusInfo();
// The row for `code`, or nullptr when the code is not in the table.
const StatusInfo *FindStatusInfo(int64_t code);
// "LLM_PARAM_INVALID"; "UNKNOWN_STATUS(0x...)" for codes outside the table.
std::string StatusName(Status code);
const char *ActionName(RecoveryAction action);

class [[nodiscard]] DetailedStatus {
 public:
  DetailedStatus() = default;  // success
  DetailedStatus(Status code, std::string message) : code_(code), message_(std::move(message)) {}

  static DetailedStatus Ok() { return DetailedStatus(); }

  bool ok() const { return code_ == LLM_SUCCESS; }
  Status code() const { return code_; }
  const std::string &message() const { return message_; }
  const std::vector<std::pair<std::string, std::string>> &context() const { return context_; }

  // Adds context (operation, cluster id, key, block index...) and returns *this for chaining.
  DetailedStatus &With(std::string key, std::string value) {
    context_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  // A literal (an operation's name) needs no stream: transfers add one to every status.
  DetailedStatus &With(std::string key, const char *value) { return With(std::move(key), std::string(value)); }
  template <typename T>
  DetailedStatus &With(std::string key, const T &value) {
    std::ostringstream os;
    os << value;
    return With(std::move(key), os.str());
  }

  // "LLM_PARAM_INVALID: <message>"
  std::string ToString() const;

 private:
  Status code_ = LLM_SUCCESS;
  std::string message_;
  std::vector<std::pair<std::string, std::string>> context_;
};

namespace detail {
template <typename... Parts>
std::string Concat(const Parts &...parts) {
  std::ostringstream os;
  (os << ... << parts);
  return os.str();
}
}  // namespace detail

}  // namespace llm_datadist

// Input check: when `cond` is false, return a DetailedStatus with `code` and a message built from
// the remaining arguments (built only on failure). Use for anything a caller can get wrong.
#define LLMDD_CHECK(cond, code, ...)                                                   \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      return ::llm_datadist::DetailedStatus((code),                                    \
                                            ::llm_datadist::detail::Concat(__VA_ARGS__)); \
    }                                                                                  \
  } while (0)

#define LLMDD_RETURN_IF_ERROR(expr)                   \
  do {                                                \
    ::llm_datadist::DetailedStatus llmdd_status_ = (expr); \
    if (!llmdd_status_.ok()) return llmdd_status_;    \
  } while (0)

#endif  // LLM_DATADIST_STATUS_H_
