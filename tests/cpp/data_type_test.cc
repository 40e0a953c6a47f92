// SPDX-License-Identifier: Apache-2.0
// ge::DataType sizes and names (csrc/common/types.cc) against CANN's element sizes.
#include <cstring>

#include "llm_datadist/types.h"
#include "test_harness.h"

using namespace llm_datadist;

LLMDD_TEST(DataType, WholeByteTypesHaveCannSizes) {
  const struct { DataType type; int64_t bytes; const char *name; } rows[] = {
      {DT_FLOAT, 4, "DT_FLOAT"},           {DT_FLOAT16, 2, "DT_FLOAT16"},       {DT_BF16, 2, "DT_BF16"},
      {DT_INT8, 1, "DT_INT8"},             {DT_UINT64, 8, "DT_UINT64"},         {DT_BOOL, 1, "DT_BOOL"},
      {DT_COMPLEX32, 4, "DT_COMPLEX32"},   {DT_COMPLEX64, 8, "DT_COMPLEX64"},   {DT_COMPLEX128, 16, "DT_COMPLEX128"},
      {DT_QINT16, 2, "DT_QINT16"},         {DT_QUINT8, 1, "DT_QUINT8"},         {DT_DUAL, 5, "DT_DUAL"},
      {DT_HIFLOAT8, 1, "DT_HIFLOAT8"},     {DT_FLOAT8_E5M2, 1, "DT_FLOAT8_E5M2"},
      {DT_FLOAT8_E4M3FN, 1, "DT_FLOAT8_E4M3FN"}, {DT_FLOAT8_E8M0, 1, "DT_FLOAT8_E8M0"},
  };
  for (const auto &row : rows) {
    EXPECT_EQ(DataTypeSize(row.type), row.bytes);
    EXPECT_EQ(std::strcmp(DataTypeName(row.type), row.name), 0);
  }
}

LLMDD_TEST(DataType, TypesWithNoWholeByteSizeAreRefused) {
  for (DataType t : {DT_STRING, DT_STRING_REF, DT_UNDEFINED, DT_INT4, DT_UINT1, DT_INT2, DT_UINT2, DT_FLOAT6_E3M2,
                     DT_FLOAT6_E2M3, DT_FLOAT4_E2M1, DT_FLOAT4_E1M2, ge::DT_HIFLOAT4}) {
    EXPECT_EQ(DataTypeSize(t), int64_t{-1});
    EXPECT_TRUE(std::strncmp(DataTypeName(t), "DT_", 3) == 0);
  }
  for (int32_t number : {-1, 5, 43, 1000}) {
    EXPECT_EQ(DataTypeSize(number), int64_t{-1});
    EXPECT_EQ(std::strcmp(DataTypeName(number), ""), 0);
  }
}
