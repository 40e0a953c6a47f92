// SPDX-License-Identifier: Apache-2.0
#include "llm_datadist/status.h"

#include <cstdio>
#include <unordered_map>

namespace llm_datadist {

const std::vector<StatusInfo> &AllStatusInfo() {
  static const std::vector<StatusInfo> kTable = {
#define LLMDD_STATUS(cpp_name, py_name, value, msg, recoverable, action, http, grpc, hint) \
  {#cpp_name, py_name, static_cast<int64_t>(value), msg, recoverable, RecoveryAction::action, \
   http, grpc, hint, false},
#define LLMDD_PY_STATUS(cpp_name, py_name, value, msg, recoverable, action, http, grpc, hint) \
  {#cpp_name, py_name, static_cast<int64_t>(value), msg, recoverable, RecoveryAction::action, \
   http, grpc, hint, true},
#include "llm_datadist/status_table.def"
#undef LLMDD_PY_STATUS
#undef LLMDD_STATUS
  };
  return kTable;
}

const StatusInfo *FindStatusInfo(int64_t code) {
  static const std::unordered_map<int64_t, const StatusInfo *> kByValue = [] {
    std::unordered_map<int64_t, const StatusInfo *> by_value;
    for (const StatusInfo &info : AllStatusInfo()) by_value.emplace(info.value, &info);
    return by_value;
  }();
  auto it = kByValue.find(code);
  return it == kByValue.end() ? nullptr : it->second;
}

std::string StatusName(Status code) {
  const StatusInfo *info = FindStatusInfo(static_cast<int64_t>(code));
  if (info != nullptr) return info->cpp_name;
  char buf[48];
  std::snprintf(buf, sizeof(buf), "UNKNOWN_STATUS(0x%08X)", code);
  return buf;
}

const char *ActionName(RecoveryAction action) {
  switch (action) {
    case RecoveryAction::kNone: return "none";
    case RecoveryAction::kRetryNow: return "retry_now";
    case RecoveryAction::kRetryLater: return "retry_later";
    case RecoveryAction::kRelink: return "relink";
    case RecoveryAction::kFixCall: return "fix_call";
    case RecoveryAction::kFreeMemory: return "free_memory";
    case RecoveryAction::kFatal: return "fatal";
  }
  return "fatal";
}

std::string DetailedStatus::ToString() const {
  if (ok()) return "LLM_SUCCESS";
  return StatusName(code_) + ": " + message_;
}

}  // namespace llm_datadist
