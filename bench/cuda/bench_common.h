/*
 * bench/cuda/bench_common.h: what the CUDA benchmark programs share. Define BENCH_NAME (the program's name, for its
 * messages) before including it (C or CUDA C++). These are programs, not library code: a failed CUDA call ends
 * them.
 */
#ifndef KILN_BENCH_COMMON_H
#define KILN_BENCH_COMMON_H

#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>

#define CK(call)                                                                                  \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      fprintf(stderr, BENCH_NAME ": %s: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__); \
      exit(1);                                                                                    \
    }                                                                                             \
  } while (0)

/* The whole file, NUL-terminated, its length in *len; NULL when it cannot be read. */
static inline char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *s = NULL;
  long n = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
  if (n >= 0 && !fseek(f, 0, SEEK_SET) && (s = (char *)malloc((size_t)n + 1)) && fread(s, 1, (size_t)n, f) != (size_t)n) {
    free(s);
    s = NULL;
  }
  fclose(f);
  if (s) s[n] = 0, *len = (size_t)n;
  return s;
}

#endif
