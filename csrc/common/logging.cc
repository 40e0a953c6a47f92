// SPDX-License-Identifier: Apache-2.0
#include "common/logging.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <mutex>

namespace llm_datadist {
namespace {

LogLevel InitialLevel() {
  const char *env = std::getenv("LLMDD_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kWarning;
  std::string value(env);
  if (value == "debug" || value == "DEBUG") return LogLevel::kDebug;
  if (value == "info" || value == "INFO") return LogLevel::kInfo;
  if (value == "error" || value == "ERROR") return LogLevel::kError;
  return LogLevel::kWarning;
}

std::atomic<int> g_level{static_cast<int>(InitialLevel())};
std::mutex g_sink_mutex;
// Held by shared_ptr so a line being written keeps its sink alive while another thread swaps it.
std::shared_ptr<LogSink> g_sink;

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = sink ? std::make_shared<LogSink>(std::move(sink)) : nullptr;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

void WriteLogLineToStderr(LogLevel level, const std::string &line) {
  static const char *kNames[] = {"DEBUG", "INFO", "WARNING", "ERROR"};
  std::string text = std::string("[llm_datadist ") + kNames[static_cast<int>(level)] + "] " + line + "\n";
  ssize_t ignored = write(2, text.data(), text.size());
  (void)ignored;
}

void LogLine(LogLevel level, const std::string &line) {
  std::shared_ptr<LogSink> sink;
  {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    sink = g_sink;
  }
  if (sink) {
    (*sink)(level, line);
  } else {
    WriteLogLineToStderr(level, line);
  }
}

}  // namespace llm_datadist
