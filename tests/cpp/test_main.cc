// SPDX-License-Identifier: Apache-2.0
#include <cstring>

#include "test_harness.h"

namespace llmdd_test {
std::vector<TestCase> &Registry() {
  static std::vector<TestCase> registry;
  return registry;
}
bool g_current_failed = false;
}  // namespace llmdd_test

int main(int argc, char **argv) {
  const char *filter = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0;
  for (const auto &test : llmdd_test::Registry()) {
    if (std::strstr(test.name.c_str(), filter) == nullptr) continue;
    llmdd_test::g_current_failed = false;
    std::cout << "[ RUN  ] " << test.name << std::endl;
    try {
      test.body();
    } catch (const std::exception &e) {
      llmdd_test::g_current_failed = true;
      std::cerr << "  uncaught exception: " << e.what() << "\n";
    }
    if (llmdd_test::g_current_failed) {
      ++failed;
      std::cout << "[ FAIL ] " << test.name << std::endl;
    } else {
      ++passed;
      std::cout << "[  OK  ] " << test.name << std::endl;
    }
  }
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  return failed == 0 ? 0 : 1;
}
