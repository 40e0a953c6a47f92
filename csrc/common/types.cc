// SPDX-License-Identifier: Apache-2.0
#include "llm_datadist/types.h"

namespace llm_datadist {

int64_t DataTypeSize(int32_t data_type) {
  switch (data_type) {
    case DT_FLOAT: case DT_INT32: case DT_UINT32: return 4;
    case DT_FLOAT16: case DT_BF16: case DT_INT16: case DT_UINT16: return 2;
    case DT_INT8: case DT_UINT8: case DT_BOOL: return 1;
    case DT_INT64: case DT_UINT64: case DT_DOUBLE: return 8;
    default: return -1;  // DT_STRING, DT_UNDEFINED and unknown numbers have no element size
  }
}

}  // namespace llm_datadist
