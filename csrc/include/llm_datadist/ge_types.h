// SPDX-License-Identifier: Apache-2.0
// The names of CANN's `ge` namespace that upstream LLM-DataDist's public header is written in:
// ge::Status, ge::SUCCESS / ge::FAILED, ge::AscendString and ge::DataType with every enumerator
// and number of CANN's graph types. Code written for Ascend (`ge::DT_BF16`, `ret == ge::SUCCESS`,
// `std::map<ge::AscendString, ge::AscendString>`) compiles against these unchanged; the
// llm_datadist namespace re-exports them under upstream's aliases (types.h, status.h).
//
// Only what the LLM-DataDist API needs is here; this is not a replacement for CANN's headers and
// must not be mixed with them in one translation unit.
#ifndef LLM_DATADIST_GE_TYPES_H_
#define LLM_DATADIST_GE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace ge {

using Status = uint32_t;
constexpr Status SUCCESS = 0x0U;
constexpr Status FAILED = 0xFFFFFFFFU;

// Option keys and values. Upstream's class keeps a shared pointer to a std::string; a value is
// enough here, and the members a caller uses (construction from C strings, GetString,
// GetLength, Find, ordering, std::hash) behave the same.
class AscendString {
 public:
  AscendString() = default;
  AscendString(const char *name) : value_(name == nullptr ? "" : name) {}  // NOLINT: implicit as upstream
  AscendString(const char *name, size_t length) : value_(name == nullptr ? "" : std::string(name, length)) {}
  // Ours: construction from a std::string, and str(), for the core's own use.
  AscendString(std::string value) : value_(std::move(value)) {}  // NOLINT: implicit
  const std::string &str() const { return value_; }

  const char *GetString() const { return value_.c_str(); }
  size_t GetLength() const { return value_.size(); }
  size_t Hash() const { return std::hash<std::string>()(value_); }
  // Position of the first occurrence of `other`, std::string::npos when absent.
  size_t Find(const AscendString &other) const { return value_.find(other.value_); }

  bool operator<(const AscendString &o) const { return value_ < o.value_; }
  bool operator>(const AscendString &o) const { return value_ > o.value_; }
  bool operator<=(const AscendString &o) const { return value_ <= o.value_; }
  bool operator>=(const AscendString &o) const { return value_ >= o.value_; }
  bool operator==(const AscendString &o) const { return value_ == o.value_; }
  bool operator!=(const AscendString &o) const { return value_ != o.value_; }

 private:
  std::string value_;
};

// CANN's graph data types, numbers as CANN defines them (5 is reserved there). The fixed
// underlying type keeps a number read from the wire or from Python a valid value of the enum
// even when it names no enumerator, so it can be refused rather than being undefined.
enum DataType : int32_t {
  DT_FLOAT = 0,
  DT_FLOAT16 = 1,
  DT_INT8 = 2,
  DT_INT32 = 3,
  DT_UINT8 = 4,
  DT_INT16 = 6,
  DT_UINT16 = 7,
  DT_UINT32 = 8,
  DT_INT64 = 9,
  DT_UINT64 = 10,
  DT_DOUBLE = 11,
  DT_BOOL = 12,
  DT_STRING = 13,
  DT_DUAL_SUB_INT8 = 14,
  DT_DUAL_SUB_UINT8 = 15,
  DT_COMPLEX64 = 16,
  DT_COMPLEX128 = 17,
  DT_QINT8 = 18,
  DT_QINT16 = 19,
  DT_QINT32 = 20,
  DT_QUINT8 = 21,
  DT_QUINT16 = 22,
  DT_RESOURCE = 23,
  DT_STRING_REF = 24,
  DT_DUAL = 25,
  DT_VARIANT = 26,
  DT_BF16 = 27,
  DT_UNDEFINED = 28,
  DT_INT4 = 29,
  DT_UINT1 = 30,
  DT_INT2 = 31,
  DT_UINT2 = 32,
  DT_COMPLEX32 = 33,
  DT_HIFLOAT8 = 34,
  DT_FLOAT8_E5M2 = 35,
  DT_FLOAT8_E4M3FN = 36,
  DT_FLOAT8_E8M0 = 37,
  DT_FLOAT6_E3M2 = 38,
  DT_FLOAT6_E2M3 = 39,
  DT_FLOAT4_E2M1 = 40,
  DT_FLOAT4_E1M2 = 41,
  DT_HIFLOAT4 = 42,
  DT_MAX = 43,
};

}  // namespace ge

namespace std {
template <>
struct hash<ge::AscendString> {
  size_t operator()(const ge::AscendString &s) const { return s.Hash(); }
};
}  // namespace std

#endif  // LLM_DATADIST_GE_TYPES_H_
