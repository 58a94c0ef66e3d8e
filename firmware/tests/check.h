// The tiny check harness shared by the host C++ tests: each check prints one line, main()
// returns non-zero when any failed. Host-only (uses stdio).
#pragma once

#include <stdio.h>

namespace tinyfed_test {

inline int g_checks = 0;
inline int g_failures = 0;

inline void check(bool cond, const char* group, const char* name) {
  ++g_checks;
  if (!cond) ++g_failures;
  printf("  %-4s %-10s %s\n", cond ? "ok" : "FAIL", group, name);
}

}  // namespace tinyfed_test
