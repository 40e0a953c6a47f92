// SPDX-License-Identifier: Apache-2.0
#include "engine/tensor_size.h"

#include <limits>

#include "llm_datadist/types.h"

namespace llm_datadist {

DetailedStatus CalcTensorSize(const std::vector<int64_t> &shape, int32_t data_type, int64_t *bytes) {
  LLMDD_CHECK(!shape.empty(), LLM_PARAM_INVALID, "shape must not be empty");
  LLMDD_CHECK(shape.size() < kMaxShapeDims, LLM_PARAM_INVALID, "shape has ", shape.size(),
              " dims, the limit is ", kMaxShapeDims - 1);
  const int64_t element = DataTypeSize(data_type);
  LLMDD_CHECK(element > 0, LLM_PARAM_INVALID, "data_type ", data_type, " (", DataTypeName(data_type),
              ") has no whole-byte element size: sub-byte, string and undefined types cannot be cached");
  int64_t total = element;
  for (size_t i = 0; i < shape.size(); ++i) {
    LLMDD_CHECK(shape[i] >= 0, LLM_PARAM_INVALID, "shape[", i, "] is ", shape[i],
                ", dims must be >= 0");
    LLMDD_CHECK(shape[i] == 0 || total <= std::numeric_limits<int64_t>::max() / shape[i],
                LLM_PARAM_INVALID, "tensor size of shape overflows int64 at dim ", i);
    total *= shape[i];
  }
  *bytes = total;
  return DetailedStatus::Ok();
}

}  // namespace llm_datadist
