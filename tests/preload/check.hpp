// The CHECK of the preload test programs. They are plain programs (no
// Catch2: each runs preloaded, against the stand-in CUDA libraries of
// fake_cuda/, or on a GPU), so a failed check prints where and what it was
// and is counted in g_failures, which the program turns into its exit
// status.
#pragma once

#include <cstdio>

inline int g_failures = 0;

#define CHECK(cond)                                                           \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      ++g_failures;                                                           \
    }                                                                         \
  } while (0)
