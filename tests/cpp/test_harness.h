// SPDX-License-Identifier: Apache-2.0
// A minimal test harness for the C++ tests (no download, no framework dependency).
//   LLMDD_TEST(Suite, Name) { EXPECT_TRUE(x); EXPECT_EQ(a, b); ASSERT_OK(status); }
// The runner (test_main.cc) runs every registered test, or those whose "Suite.Name" contains
// argv[1], and prints "N passed, M failed".
#ifndef LLMDD_TESTS_CPP_TEST_HARNESS_H_
#define LLMDD_TESTS_CPP_TEST_HARNESS_H_

#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace llmdd_test {

struct TestCase {
  std::string name;
  std::function<void()> body;
};

std::vector<TestCase> &Registry();
// Set by the EXPECT macros when a check fails inside the running test.
extern bool g_current_failed;

struct Registrar {
  Registrar(const char *name, std::function<void()> body) {
    Registry().push_back({name, std::move(body)});
  }
};

}  // namespace llmdd_test

#define LLMDD_TEST(suite, name)                                                  \
  static void llmdd_test_##suite##_##name();                                     \
  static ::llmdd_test::Registrar llmdd_registrar_##suite##_##name(#suite "." #name, \
                                                                  llmdd_test_##suite##_##name); \
  static void llmdd_test_##suite##_##name()

#define LLMDD_FAIL_AT(what)                                                      \
  do {                                                                           \
    ::llmdd_test::g_current_failed = true;                                       \
    std::cerr << "  " << __FILE__ << ":" << __LINE__ << ": " << what << "\n";   \
  } while (0)

#define EXPECT_TRUE(cond) \
  do { if (!(cond)) LLMDD_FAIL_AT("expected true: " #cond); } while (0)
#define EXPECT_FALSE(cond) \
  do { if (cond) LLMDD_FAIL_AT("expected false: " #cond); } while (0)
#define EXPECT_EQ(a, b)                                                            \
  do {                                                                             \
    auto llmdd_a_ = (a);                                                           \
    auto llmdd_b_ = (b);                                                           \
    if (!(llmdd_a_ == llmdd_b_))                                                   \
      LLMDD_FAIL_AT("expected " #a " == " #b ", got " << llmdd_a_ << " vs " << llmdd_b_); \
  } while (0)
#define ASSERT_TRUE(cond) \
  do { if (!(cond)) { LLMDD_FAIL_AT("assertion failed: " #cond); return; } } while (0)
#define ASSERT_OK(expr)                                                            \
  do {                                                                             \
    auto llmdd_s_ = (expr);                                                        \
    if (!llmdd_s_.ok()) { LLMDD_FAIL_AT(#expr " failed: " << llmdd_s_.ToString()); return; } \
  } while (0)
#define EXPECT_CODE(expr, expected)                                                \
  do {                                                                             \
    auto llmdd_s_ = (expr);                                                        \
    if (llmdd_s_.code() != (expected))                                             \
      LLMDD_FAIL_AT(#expr " returned " << llmdd_s_.ToString() << ", expected " #expected); \
  } while (0)

#endif  // LLMDD_TESTS_CPP_TEST_HARNESS_H_
