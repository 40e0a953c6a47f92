// SPDX-License-Identifier: Apache-2.0
// Core logging: one process-wide sink (stderr by default; the Python module routes it into the
// `logging` package). Lines below the level are dropped before formatting.
#ifndef LLM_DATADIST_COMMON_LOGGING_H_
#define LLM_DATADIST_COMMON_LOGGING_H_

#include <functional>
#include <string>

#include "llm_datadist/status.h"

namespace llm_datadist {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

using LogSink = std::function<void(LogLevel, const std::string &)>;

// nullptr restores the default (stderr).
void SetLogSink(LogSink sink);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const std::string &line);
void WriteLogLineToStderr(LogLevel level, const std::string &line);

}  // namespace llm_datadist

#define LLMDD_LOG(level, ...)                                                        \
  do {                                                                               \
    if (::llm_datadist::LogEnabled(::llm_datadist::LogLevel::level))                 \
      ::llm_datadist::LogLine(::llm_datadist::LogLevel::level,                       \
                              ::llm_datadist::detail::Concat(__VA_ARGS__));          \
  } while (0)

#endif  // LLM_DATADIST_COMMON_LOGGING_H_
