// SPDX-License-Identifier: Apache-2.0
// Upstream's llm_error_codes.h: the LLM status codes under their CANN names in namespace ge
// (ge::LLM_PARAM_INVALID, ...). They are the llm_datadist constants themselves (status.h), so
// ge::LLM_X == llm_datadist::LLM_X and code with both using-directives is not ambiguous.
// Upstream's ge namespace has no LLM_SUCCESS / LLM_FAILED; ge::SUCCESS / ge::FAILED are those.
#ifndef LLM_DATADIST_LLM_ERROR_CODES_H_
#define LLM_DATADIST_LLM_ERROR_CODES_H_

#include "llm_datadist/status.h"

namespace ge {
using ::llm_datadist::LLM_WAIT_PROC_TIMEOUT;
using ::llm_datadist::LLM_KV_CACHE_NOT_EXIST;
using ::llm_datadist::LLM_REPEAT_REQUEST;
using ::llm_datadist::LLM_REQUEST_ALREADY_COMPLETED;
using ::llm_datadist::LLM_PARAM_INVALID;
using ::llm_datadist::LLM_ENGINE_FINALIZED;
using ::llm_datadist::LLM_NOT_YET_LINK;
using ::llm_datadist::LLM_ALREADY_LINK;
using ::llm_datadist::LLM_LINK_FAILED;
using ::llm_datadist::LLM_UNLINK_FAILED;
using ::llm_datadist::LLM_NOTIFY_PROMPT_UNLINK_FAILED;
using ::llm_datadist::LLM_CLUSTER_NUM_EXCEED_LIMIT;
using ::llm_datadist::LLM_PROCESSING_LINK;
using ::llm_datadist::LLM_DEVICE_OUT_OF_MEMORY;
using ::llm_datadist::LLM_PREFIX_ALREADY_EXIST;
using ::llm_datadist::LLM_PREFIX_NOT_EXIST;
using ::llm_datadist::LLM_SEQ_LEN_OVER_LIMIT;
using ::llm_datadist::LLM_NO_FREE_BLOCK;
using ::llm_datadist::LLM_BLOCKS_OUT_OF_MEMORY;
using ::llm_datadist::LLM_CACHE_INCOMPATIBLE;
using ::llm_datadist::LLM_CACHE_KEY_ALREADY_EXIST;
using ::llm_datadist::LLM_COPY_CACHE_FAILED;
using ::llm_datadist::LLM_CACHE_ID_ALREADY_EXIST;
using ::llm_datadist::LLM_EXIST_LINK;
using ::llm_datadist::LLM_FEATURE_NOT_ENABLED;
using ::llm_datadist::LLM_TIMEOUT;
using ::llm_datadist::LLM_LINK_BUSY;
using ::llm_datadist::LLM_OUT_OF_MEMORY;
}  // namespace ge

#endif  // LLM_DATADIST_LLM_ERROR_CODES_H_
