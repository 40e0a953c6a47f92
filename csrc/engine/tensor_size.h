// SPDX-License-Identifier: Apache-2.0
#ifndef LLM_DATADIST_ENGINE_TENSOR_SIZE_H_
#define LLM_DATADIST_ENGINE_TENSOR_SIZE_H_

#include <cstdint>
#include <vector>

#include "llm_datadist/status.h"

namespace llm_datadist {

// Upstream engine limit on tensor rank.
constexpr size_t kMaxShapeDims = 32;

// Bytes of one tensor; LLM_PARAM_INVALID for an empty or too-long shape, a negative dimension,
// a type without element size, or a size that overflows int64.
DetailedStatus CalcTensorSize(const std::vector<int64_t> &shape, int32_t data_type, int64_t *bytes);

}  // namespace llm_datadist

#endif  // LLM_DATADIST_ENGINE_TENSOR_SIZE_H_
