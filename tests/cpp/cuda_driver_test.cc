// SPDX-License-Identifier: Apache-2.0
// Tests of the run-time CUDA loader (csrc/common/cuda_driver.h).
//
// Which path runs depends on the environment, and each test checks one of two things, never
// neither:
//   * CUDA available (a real driver, or LLMDD_CUDA_LIBRARY pointing at the fake built from
//     fault_injection/fake_cuda): allocation, copies and contexts, byte for byte;
//   * CUDA unavailable: every helper fails with LLM_FEATURE_NOT_ENABLED naming the reason.
// LLMDD_TEST_EXPECT_CUDA=1 / =0 makes the expectation explicit (tests/unit/test_cuda_loader.py
// sets it), so a fake that failed to load cannot pass as "unavailable". Without it, a set
// LLMDD_CUDA_LIBRARY means "expect available", else the test follows what Probe() found.
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/cuda_driver.h"
#include "test_harness.h"

// Like the harness's EXPECT_CODE, which cannot be used here: its parameter is named `code`,
// so the `.code()` in its body is replaced by the argument.
#define EXPECT_STATUS(expr, want)                                                         \
  do {                                                                                    \
    auto llmdd_st_ = (expr);                                                              \
    if (llmdd_st_.code() != (want))                                                       \
      LLMDD_FAIL_AT(#expr " returned " << llmdd_st_.ToString() << ", expected " #want);   \
  } while (0)

namespace llm_datadist::cuda {
namespace {

std::string ContextValue(const DetailedStatus &s, const std::string &key) {
  for (const auto &[k, v] : s.context()) {
    if (k == key) return v;
  }
  return "<absent>";
}

bool Contains(const std::string &haystack, const std::string &needle) {
  return haystack.find(needle) != std::string::npos;
}

// Whether this run must see a usable driver. Fails the test when the expectation and the
// driver disagree, so no test can pass by taking the wrong branch.
bool ExpectAvailable() {
  const CudaInfo info = Probe();
  const char *expect = std::getenv("LLMDD_TEST_EXPECT_CUDA");
  const char *library = std::getenv("LLMDD_CUDA_LIBRARY");
  bool expected = info.available;
  if (expect != nullptr && expect[0] != '\0') {
    expected = std::strcmp(expect, "0") != 0;
  } else if (library != nullptr && library[0] != '\0') {
    expected = true;
  }
  if (expected != info.available) {
    LLMDD_FAIL_AT("CUDA expected " << (expected ? "available" : "unavailable") << ", Probe says "
                                   << (info.available ? "available" : "unavailable: ")
                                   << info.reason);
  }
  return info.available;
}

// A host buffer with a recognizable, position-dependent pattern.
std::vector<unsigned char> Pattern(size_t n, unsigned seed) {
  std::vector<unsigned char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<unsigned char>((i * 131 + seed * 7 + 1) & 0xff);
  return v;
}

void *AsPtr(CUdeviceptr p) { return reinterpret_cast<void *>(static_cast<uintptr_t>(p)); }

// ---- Mapping (needs no driver; uses its names when there is one) ----

LLMDD_TEST(CudaDriver, CheckCuMapsSuccess) {
  DetailedStatus s = CheckCu(0, "cuInit");
  EXPECT_TRUE(s.ok());
  EXPECT_TRUE(s.context().empty());
}

LLMDD_TEST(CudaDriver, CheckCuMapsOutOfMemory) {
  DetailedStatus s = CheckCu(2, "cuMemAlloc");
  EXPECT_EQ(s.code(), LLM_DEVICE_OUT_OF_MEMORY);
  EXPECT_TRUE(Contains(s.message(), "cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2): "));
  EXPECT_TRUE(Contains(s.message(), "out of memory"));
  EXPECT_EQ(ContextValue(s, "cuda_call"), std::string("cuMemAlloc"));
  EXPECT_EQ(ContextValue(s, "cuda_error"), std::string("CUDA_ERROR_OUT_OF_MEMORY"));
  EXPECT_EQ(ContextValue(s, "cuda_code"), std::string("2"));
  EXPECT_EQ(ContextValue(s, "cuda_sticky"), std::string("<absent>"));
}

LLMDD_TEST(CudaDriver, CheckCuMapsEccToDeviceMemError) {
  DetailedStatus s = CheckCu(214, "cuMemcpy");
  EXPECT_EQ(s.code(), LLM_DEVICE_MEM_ERROR);
  EXPECT_TRUE(Contains(s.message(), "cuMemcpy failed: CUDA_ERROR_ECC_UNCORRECTABLE (214): "));
  EXPECT_EQ(ContextValue(s, "cuda_code"), std::string("214"));
}

LLMDD_TEST(CudaDriver, CheckCuMapsStickyIllegalAddress) {
  DetailedStatus s = CheckCu(700, "cuStreamSynchronize");
  EXPECT_EQ(s.code(), LLM_FAILED);
  EXPECT_TRUE(Contains(s.message(),
                       "cuStreamSynchronize failed: CUDA_ERROR_ILLEGAL_ADDRESS (700): "));
  EXPECT_EQ(ContextValue(s, "cuda_sticky"), std::string("true"));
  EXPECT_EQ(ContextValue(s, "cuda_error"), std::string("CUDA_ERROR_ILLEGAL_ADDRESS"));
}

LLMDD_TEST(CudaDriver, CheckCuMapsUnknownToFailed) {
  DetailedStatus s = CheckCu(999, "cuCtxSynchronize");
  EXPECT_EQ(s.code(), LLM_FAILED);
  EXPECT_TRUE(Contains(s.message(), "CUDA_ERROR_UNKNOWN (999)"));
  EXPECT_EQ(ContextValue(s, "cuda_sticky"), std::string("<absent>"));
  // A code no table knows still yields a readable message, not a crash.
  DetailedStatus odd = CheckCu(123456, "cuFoo");
  EXPECT_EQ(odd.code(), LLM_FAILED);
  EXPECT_TRUE(Contains(odd.message(), "cuFoo failed: "));
  EXPECT_TRUE(Contains(odd.message(), "(123456)"));
}

LLMDD_TEST(CudaDriver, StickyCodesFollowCudaH) {
  for (int code : {226, 700, 702, 710, 714, 715, 716, 717, 718, 719, 721, 810, 911}) {
    if (!IsStickyCudaError(code)) LLMDD_FAIL_AT("code " << code << " should be sticky");
    EXPECT_EQ(ContextValue(CheckCu(code, "x"), "cuda_sticky"), std::string("true"));
  }
  for (int code : {0, 1, 2, 100, 214, 220, 701, 999}) {
    if (IsStickyCudaError(code)) LLMDD_FAIL_AT("code " << code << " should not be sticky");
  }
}

// ---- Loader ----

LLMDD_TEST(CudaDriver, ProbeIsConsistent) {
  const bool available = ExpectAvailable();
  const CudaInfo info = Probe();
  std::string why;
  const DriverApi *api = Driver(&why);
  EXPECT_EQ(api != nullptr, available);
  if (available) {
    EXPECT_TRUE(info.reason.empty());
    EXPECT_TRUE(info.device_count > 0);
    EXPECT_EQ(info.device_names.size(), static_cast<size_t>(info.device_count));
    EXPECT_EQ(info.device_total_bytes.size(), static_cast<size_t>(info.device_count));
    EXPECT_TRUE(info.driver_version > 0);
    EXPECT_FALSE(info.library_path.empty());
    for (uint64_t total : info.device_total_bytes) EXPECT_TRUE(total > 0);
  } else {
    EXPECT_FALSE(info.reason.empty());
    EXPECT_EQ(why, info.reason);
    EXPECT_EQ(info.device_count, 0);
  }
}

LLMDD_TEST(CudaDriver, UnavailablePathsNameTheReason) {
  if (ExpectAvailable()) {
    // The available path is covered below; check here that helpers refuse bad input instead.
    CUdeviceptr p = 0;
    EXPECT_STATUS(DeviceAlloc(0, 0, &p), LLM_PARAM_INVALID);
    EXPECT_STATUS(DeviceAlloc(Probe().device_count, 16, &p), LLM_PARAM_INVALID);
    EXPECT_STATUS(DeviceAlloc(-1, 16, &p), LLM_PARAM_INVALID);
    std::optional<ScopedDeviceContext> ctx;
    EXPECT_STATUS(ScopedDeviceContext::Enter(Probe().device_count, &ctx), LLM_PARAM_INVALID);
    EXPECT_FALSE(ctx.has_value());
    return;
  }
  const std::string reason = Probe().reason;
  CUdeviceptr p = 1;
  DetailedStatus s = DeviceAlloc(0, 4096, &p);
  EXPECT_EQ(s.code(), LLM_FEATURE_NOT_ENABLED);
  EXPECT_TRUE(Contains(s.message(), reason));
  EXPECT_EQ(p, 0ULL);
  EXPECT_STATUS(DeviceFree(0, 0x1000), LLM_FEATURE_NOT_ENABLED);
  EXPECT_STATUS(DeviceFree(0, 0), LLM_SUCCESS);  // freeing null is always fine
  char a[8] = "abcdefg", b[8] = {0};
  EXPECT_STATUS(Memcpy(b, a, sizeof(a)), LLM_FEATURE_NOT_ENABLED);
  EXPECT_STATUS(MemcpyBatch({{b, a, sizeof(a)}}), LLM_FEATURE_NOT_ENABLED);
  std::optional<ScopedDeviceContext> ctx;
  EXPECT_STATUS(ScopedDeviceContext::Enter(0, &ctx), LLM_FEATURE_NOT_ENABLED);
  EXPECT_FALSE(ctx.has_value());
  int ordinal = 5;
  EXPECT_STATUS(DeviceOfPointer(a, &ordinal), LLM_FEATURE_NOT_ENABLED);
}

// ---- Available path (real driver or the fake) ----

LLMDD_TEST(CudaDriver, ScopedContextRestoresPrevious) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  const DriverApi *api = Driver();
  ASSERT_TRUE(api != nullptr);
  CUcontext before = reinterpret_cast<CUcontext>(0x1);
  ASSERT_TRUE(api->cuCtxGetCurrent(&before) == 0);
  {
    std::optional<ScopedDeviceContext> outer;
    ASSERT_OK(ScopedDeviceContext::Enter(0, &outer));
    ASSERT_TRUE(outer.has_value());
    EXPECT_EQ(outer->ordinal(), 0);
    CUcontext now = nullptr;
    ASSERT_TRUE(api->cuCtxGetCurrent(&now) == 0);
    EXPECT_TRUE(now == outer->context());
    CUcontext primary = nullptr;
    ASSERT_OK(PrimaryContext(0, &primary));
    EXPECT_TRUE(primary == outer->context());
    {
      std::optional<ScopedDeviceContext> inner;  // same device: nothing to switch or undo
      ASSERT_OK(ScopedDeviceContext::Enter(0, &inner));
      const int last = Probe().device_count - 1;
      std::optional<ScopedDeviceContext> other;
      ASSERT_OK(ScopedDeviceContext::Enter(last, &other));
      ASSERT_TRUE(api->cuCtxGetCurrent(&now) == 0);
      EXPECT_TRUE(now == other->context());
    }
    ASSERT_TRUE(api->cuCtxGetCurrent(&now) == 0);
    EXPECT_TRUE(now == outer->context());
  }
  CUcontext after = reinterpret_cast<CUcontext>(0x1);
  ASSERT_TRUE(api->cuCtxGetCurrent(&after) == 0);
  EXPECT_TRUE(after == before);
}

LLMDD_TEST(CudaDriver, AllocMemcpyFreeRoundTrip) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  const size_t n = (1 << 20) + 3;  // odd size: no accidental alignment assumptions
  const std::vector<unsigned char> src = Pattern(n, 1);
  CUdeviceptr d1 = 0, d2 = 0;
  ASSERT_OK(DeviceAlloc(0, n, &d1));
  ASSERT_OK(DeviceAlloc(0, n, &d2));
  EXPECT_TRUE(d1 != 0 && d2 != 0 && d1 != d2);

  int ordinal = -2;
  ASSERT_OK(DeviceOfPointer(AsPtr(d1 + 17), &ordinal));
  EXPECT_EQ(ordinal, 0);
  ASSERT_OK(DeviceOfPointer(src.data(), &ordinal));
  EXPECT_EQ(ordinal, -1);

  ASSERT_OK(Memcpy(AsPtr(d1), src.data(), n));              // host -> device
  ASSERT_OK(Memcpy(AsPtr(d2), AsPtr(d1), n));               // device -> device
  std::vector<unsigned char> back(n, 0);
  ASSERT_OK(Memcpy(back.data(), AsPtr(d2), n));             // device -> host
  EXPECT_TRUE(back == src);
  std::vector<unsigned char> host_copy(n, 0);
  ASSERT_OK(Memcpy(host_copy.data(), src.data(), n));       // host -> host
  EXPECT_TRUE(host_copy == src);
  EXPECT_STATUS(Memcpy(back.data(), AsPtr(d2), 0), LLM_SUCCESS);

  ASSERT_OK(DeviceFree(0, d1));
  ASSERT_OK(DeviceFree(0, d2));
  ASSERT_OK(DeviceFree(0, 0));
}

LLMDD_TEST(CudaDriver, MemcpyBatchIsByteExact) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  const size_t block = 4099;
  const size_t blocks = 64;
  const size_t n = block * blocks;
  const std::vector<unsigned char> src = Pattern(n, 2);
  CUdeviceptr dev = 0, dev2 = 0;
  ASSERT_OK(DeviceAlloc(0, n, &dev));
  ASSERT_OK(DeviceAlloc(0, n, &dev2));

  // Scatter host blocks to the device in reverse order: device block i = host block B-1-i.
  std::vector<CopyRegion> up;
  for (size_t i = 0; i < blocks; ++i) {
    up.push_back({AsPtr(dev + i * block), src.data() + (blocks - 1 - i) * block, block});
  }
  up.push_back({AsPtr(dev), src.data(), 0});  // zero-byte regions are skipped
  ASSERT_OK(MemcpyBatch(up));

  // One mixed batch: device -> device (shifted by one block), device -> host, host -> host.
  std::vector<unsigned char> down(n, 0), host_copy(block, 0);
  std::vector<CopyRegion> mixed;
  for (size_t i = 0; i + 1 < blocks; ++i) {
    mixed.push_back({AsPtr(dev2 + (i + 1) * block), AsPtr(dev + i * block), block});
  }
  for (size_t i = 0; i < blocks; ++i) {
    mixed.push_back({down.data() + i * block, AsPtr(dev + i * block), block});
  }
  mixed.push_back({host_copy.data(), src.data() + 5 * block, block});
  ASSERT_OK(MemcpyBatch(mixed));

  for (size_t i = 0; i < blocks; ++i) {
    if (std::memcmp(down.data() + i * block, src.data() + (blocks - 1 - i) * block, block) != 0) {
      LLMDD_FAIL_AT("device->host block " << i << " differs");
    }
  }
  EXPECT_EQ(std::memcmp(host_copy.data(), src.data() + 5 * block, block), 0);
  std::vector<unsigned char> shifted(n, 0);
  ASSERT_OK(Memcpy(shifted.data(), AsPtr(dev2), n));
  for (size_t i = 0; i + 1 < blocks; ++i) {
    if (std::memcmp(shifted.data() + (i + 1) * block, down.data() + i * block, block) != 0) {
      LLMDD_FAIL_AT("device->device block " << i << " differs");
    }
  }
  EXPECT_STATUS(MemcpyBatch({}), LLM_SUCCESS);
  ASSERT_OK(DeviceFree(0, dev));
  ASSERT_OK(DeviceFree(0, dev2));
}

LLMDD_TEST(CudaDriver, MemcpyBatchAcrossDevices) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  const int count = Probe().device_count;
  if (count < 2) {
    std::cout << "  (one device: the cross-device batch runs with the last device = 0)\n";
  }
  const int last = count - 1;
  const size_t n = 8192 + 5;
  const std::vector<unsigned char> a = Pattern(n, 3), b = Pattern(n, 4);
  CUdeviceptr d0 = 0, d1 = 0;
  ASSERT_OK(DeviceAlloc(0, n, &d0));
  ASSERT_OK(DeviceAlloc(last, n, &d1));
  int ordinal = -1;
  ASSERT_OK(DeviceOfPointer(AsPtr(d1), &ordinal));
  EXPECT_EQ(ordinal, last);
  ASSERT_OK(MemcpyBatch({{AsPtr(d0), a.data(), n}, {AsPtr(d1), b.data(), n}}));
  std::vector<unsigned char> ra(n), rb(n);
  ASSERT_OK(MemcpyBatch({{rb.data(), AsPtr(d1), n}, {ra.data(), AsPtr(d0), n}}));
  EXPECT_TRUE(ra == a);
  EXPECT_TRUE(rb == b);
  ASSERT_OK(DeviceFree(0, d0));
  ASSERT_OK(DeviceFree(last, d1));
}

LLMDD_TEST(CudaDriver, ConcurrentCallersOnFreshThreads) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  const DriverApi *api = Driver();
  ASSERT_TRUE(api != nullptr);
  const int count = Probe().device_count;
  constexpr int kThreads = 8;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([t, count, api, &failures] {
      // A new thread has no current context; the helpers must set one and leave none behind.
      const int ordinal = t % count;
      const size_t block = 1024 + static_cast<size_t>(t);
      const size_t blocks = 16;
      const std::vector<unsigned char> src = Pattern(block * blocks, 10 + t);
      std::vector<unsigned char> back(src.size(), 0);
      for (int round = 0; round < 20; ++round) {
        CUdeviceptr dev = 0;
        if (!DeviceAlloc(ordinal, src.size(), &dev).ok()) { ++failures[t]; return; }
        std::vector<CopyRegion> up, down;
        for (size_t i = 0; i < blocks; ++i) {
          up.push_back({AsPtr(dev + i * block), src.data() + i * block, block});
          down.push_back({back.data() + i * block, AsPtr(dev + i * block), block});
        }
        if (!MemcpyBatch(up).ok() || !MemcpyBatch(down).ok()) ++failures[t];
        if (back != src) ++failures[t];
        if (!DeviceFree(ordinal, dev).ok()) ++failures[t];
      }
      CUcontext left = reinterpret_cast<CUcontext>(0x1);
      if (api->cuCtxGetCurrent(&left) != 0 || left != nullptr) ++failures[t];
    });
  }
  for (std::thread &thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    if (failures[t] != 0) LLMDD_FAIL_AT("thread " << t << ": " << failures[t] << " failures");
  }
}

LLMDD_TEST(CudaDriver, DriverErrorsComeBackMapped) {
  if (!ExpectAvailable()) return;  // covered by UnavailablePathsNameTheReason
  // More than the device has: the driver's own out-of-memory, mapped.
  const uint64_t total = Probe().device_total_bytes[0];
  CUdeviceptr p = 0;
  DetailedStatus oom = DeviceAlloc(0, static_cast<size_t>(total) * 2, &p);
  EXPECT_EQ(oom.code(), LLM_DEVICE_OUT_OF_MEMORY);
  EXPECT_EQ(ContextValue(oom, "cuda_code"), std::string("2"));
  EXPECT_EQ(ContextValue(oom, "device"), std::string("0"));
  EXPECT_TRUE(Contains(oom.message(), "cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY (2)"));
  EXPECT_EQ(p, 0ULL);

  // Freeing something that is not an allocation: the driver says invalid value.
  std::vector<unsigned char> host(64);
  DetailedStatus bad = DeviceFree(0, static_cast<CUdeviceptr>(
                                         reinterpret_cast<uintptr_t>(host.data())));
  EXPECT_EQ(bad.code(), LLM_FAILED);
  EXPECT_EQ(ContextValue(bad, "cuda_call"), std::string("cuMemFree"));
  EXPECT_EQ(ContextValue(bad, "cuda_error"), std::string("CUDA_ERROR_INVALID_VALUE"));
}

}  // namespace
}  // namespace llm_datadist::cuda
