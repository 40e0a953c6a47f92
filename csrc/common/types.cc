// SPDX-License-Identifier: Apache-2.0
#include "llm_datadist/types.h"

namespace llm_datadist {

namespace {
struct DataTypeRow {
  const char *name;
  int64_t bytes;  // -1: no whole-byte element size
};

// Indexed by the ge::DataType number. Sizes are CANN's element sizes; the sub-byte types
// (CANN packs them, 2 to 8 elements a byte) get -1: a cache here is sized and sliced in whole
// elements, so such a tensor would be mis-sized. DT_STRING / DT_STRING_REF hold pointers to
// host strings in CANN, which cannot move between processes as bytes.
constexpr DataTypeRow kDataTypes[] = {
    {"DT_FLOAT", 4},         {"DT_FLOAT16", 2},        {"DT_INT8", 1},           {"DT_INT32", 4},
    {"DT_UINT8", 1},         {"", -1} /* reserved */,  {"DT_INT16", 2},          {"DT_UINT16", 2},
    {"DT_UINT32", 4},        {"DT_INT64", 8},          {"DT_UINT64", 8},         {"DT_DOUBLE", 8},
    {"DT_BOOL", 1},          {"DT_STRING", -1},        {"DT_DUAL_SUB_INT8", 1},  {"DT_DUAL_SUB_UINT8", 1},
    {"DT_COMPLEX64", 8},     {"DT_COMPLEX128", 16},    {"DT_QINT8", 1},          {"DT_QINT16", 2},
    {"DT_QINT32", 4},        {"DT_QUINT8", 1},         {"DT_QUINT16", 2},        {"DT_RESOURCE", 8},
    {"DT_STRING_REF", -1},   {"DT_DUAL", 5},           {"DT_VARIANT", 8},        {"DT_BF16", 2},
    {"DT_UNDEFINED", -1},    {"DT_INT4", -1},          {"DT_UINT1", -1},         {"DT_INT2", -1},
    {"DT_UINT2", -1},        {"DT_COMPLEX32", 4},      {"DT_HIFLOAT8", 1},       {"DT_FLOAT8_E5M2", 1},
    {"DT_FLOAT8_E4M3FN", 1}, {"DT_FLOAT8_E8M0", 1},    {"DT_FLOAT6_E3M2", -1},   {"DT_FLOAT6_E2M3", -1},
    {"DT_FLOAT4_E2M1", -1},  {"DT_FLOAT4_E1M2", -1},   {"DT_HIFLOAT4", -1},
};
static_assert(sizeof(kDataTypes) / sizeof(kDataTypes[0]) == ge::DT_MAX, "one row per ge::DataType number");

const DataTypeRow *Row(int32_t data_type) {
  if (data_type < 0 || data_type >= ge::DT_MAX) return nullptr;
  return &kDataTypes[data_type];
}
}  // namespace

int64_t DataTypeSize(int32_t data_type) {
  const DataTypeRow *row = Row(data_type);
  return row == nullptr ? -1 : row->bytes;
}

const char *DataTypeName(int32_t data_type) {
  const DataTypeRow *row = Row(data_type);
  return row == nullptr ? "" : row->name;
}

}  // namespace llm_datadist
