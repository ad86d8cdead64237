/*
 * tests/cuda/gpu_test.h: the small harness of the CUDA tests.
 *
 * A GPU test exits 77 (CTest's skip code, see CMakeLists.txt) when no CUDA device is present, so the suite
 * compiles and skips cleanly on a machine without one. Comparisons use the normalised mean squared error
 * NMSE = sum (a - r)^2 / sum r^2 (ggml's test-backend-ops measure); any NaN or infinity in `a` fails.
 */
#ifndef KILN_TESTS_GPU_TEST_H
#define KILN_TESTS_GPU_TEST_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "kiln/status.h"

static int gt_failures;
static int gt_checks;

#define GT_CHECK(cond, ...)                                                    \
  do {                                                                         \
    gt_checks++;                                                               \
    if (!(cond)) {                                                             \
      gt_failures++;                                                           \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                     \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, "\n");                                                   \
    }                                                                          \
  } while (0)

/* A kiln call that must succeed. */
#define GT_OK(call)                                                                            \
  do {                                                                                         \
    int gt_rc_ = (call);                                                                       \
    gt_checks++;                                                                               \
    if (gt_rc_ != 0) {                                                                         \
      gt_failures++;                                                                           \
      fprintf(stderr, "FAIL %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call,                \
              kiln_err_name(gt_rc_), kiln_last_error());                                       \
    }                                                                                          \
  } while (0)

/* A CUDA runtime call that must succeed (test setup); aborts the test on failure. */
#define GT_CUDA(call)                                                                          \
  do {                                                                                         \
    cudaError_t gt_e_ = (call);                                                                \
    if (gt_e_ != cudaSuccess) {                                                                \
      fprintf(stderr, "FATAL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                     \
              cudaGetErrorString(gt_e_));                                                      \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static inline void gt_skip_without_gpu(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    printf("SKIP: no CUDA device\n");
    exit(77);
  }
}

static inline int gt_finish(const char *name) {
  printf("%s: %d checks, %d failures\n", name, gt_checks, gt_failures);
  return gt_failures ? 1 : 0;
}

/* ---- deterministic random inputs (a fresh stream per call site through the seed) ---- */

static uint64_t gt_rng = 0x853c49e6748fea9bull;

static inline void gt_seed(uint64_t s) { gt_rng = s * 0x9e3779b97f4a7c15ull + 1; }

static inline uint64_t gt_next(void) {
  uint64_t z = (gt_rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static inline float gt_unif(void) { return (float)((double)(gt_next() >> 11) * (2.0 / 9007199254740992.0) - 1.0); }

/* Approximately normal (sum of 4 uniforms, unit variance). */
static inline float gt_normal(void) {
  return (gt_unif() + gt_unif() + gt_unif() + gt_unif()) * 0.8660254f;
}

static inline double gt_nmse(const float *a, const float *r, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(a[i])) return INFINITY;
    double d = (double)a[i] - (double)r[i];
    num += d * d;
    den += (double)r[i] * (double)r[i];
  }
  return den > 0 ? num / den : num;
}

/* ---- device buffers ---- */

static inline void *gt_dev(size_t bytes) {
  void *p = NULL;
  GT_CUDA(cudaMalloc(&p, bytes ? bytes : 1));
  GT_CUDA(cudaMemset(p, 0xff, bytes ? bytes : 1)); /* poison: NaN as f32 and as bf16 */
  return p;
}

static inline void gt_up(void *dst, const void *src, size_t bytes) {
  GT_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

static inline void gt_down(void *dst, const void *src, size_t bytes) {
  GT_CUDA(cudaDeviceSynchronize());
  GT_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

static inline void gt_poison(void *p, size_t bytes) { GT_CUDA(cudaMemset(p, 0xff, bytes)); }

#endif
