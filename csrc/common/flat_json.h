// SPDX-License-Identifier: Apache-2.0
// Parser for the flat JSON objects used in option values (e.g. mem_pool_cfg
// '{"memory_size": 1048576, "page_shift": 16}'): one object of string keys whose values are
// integers, strings or booleans. Nested values are rejected with a message, not guessed at.
#ifndef LLM_DATADIST_COMMON_FLAT_JSON_H_
#define LLM_DATADIST_COMMON_FLAT_JSON_H_

#include <cstdint>
#include <map>
#include <string>

namespace llm_datadist {

struct FlatJsonValue {
  enum class Kind { kInteger, kString, kBool } kind = Kind::kInteger;
  // Integers are kept as written, sign included, so range checks can name the exact value.
  bool negative = false;
  uint64_t magnitude = 0;
  std::string text;
  bool boolean = false;
};

// Returns false with `error` set on malformed input or nested values.
bool ParseFlatJsonObject(const std::string &json, std::map<std::string, FlatJsonValue> *out,
                         std::string *error);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_COMMON_FLAT_JSON_H_
