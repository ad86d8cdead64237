/*
 * backend/cpu/cpu_kernels.h (internal): the fast CPU kernels, one table per instruction set.
 *
 * The forward pass spends nearly all its time in two places: matmuls against the weights (memory-bound in decode,
 * compute-bound in prefill) and attention over the KV cache. Those are the kernels here; the small per-token ops
 * (norms, RoPE, SwiGLU) are plain C in cpu_ops.c.
 *
 * A table is chosen once at run time: AVX2+FMA+F16C when the CPU has them (__builtin_cpu_supports; the functions
 * are compiled with target attributes, so the rest of the library needs no -mavx2), else the portable one.
 * Every kernel is tested against ref_ops.h (tests/cpu/).
 *
 * Matmul inputs are "prepared" first: prep_x() reorders each row of x into the order the kernel consumes the
 * weights in (the AVX2 bf16 kernel widens 16 bf16 weights into their 8 even and 8 odd elements, so x is stored as
 * evens then odds per block of 16). One prepared x serves every matmul that reads it (q, k and v; gate and up).
 */
#ifndef KILN_CPU_KERNELS_H
#define KILN_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/model.h"

typedef struct kiln_cpu_kernels {
  const char *name; /* "avx2", "generic" */
  /* xp[n][in] = x[n][in] reordered for weights of dtype dt. xp must not alias x. */
  void (*prep_x)(float *xp, const float *x, int64_t n, int64_t in, kiln_dtype dt);
  /* y[t*ldy + o] = sum_i x[t][i] W[o][i] for t < n and o0 <= o < o1; W is [out][in] of dtype dt; xp from prep_x.
   * Rows are blocked so each weight row is read from memory once for all n tokens. */
  void (*matmul)(float *y, int64_t ldy, const float *xp, int64_t n, const void *w, kiln_dtype dt, int64_t in,
                 int64_t o0, int64_t o1);
  /* sum_i a[i] b[i] */
  float (*dot)(const float *a, const float *b, int64_t n);
  /* y[i] += a * x[i] */
  void (*axpy)(float *y, float a, const float *x, int64_t n);
  /* x = softmax(x) in place (max subtracted; exp within 2 ulp) */
  void (*softmax)(float *x, int64_t n);
} kiln_cpu_kernels;

extern const kiln_cpu_kernels kiln_cpu_kernels_generic;
/* The AVX2/FMA/F16C table, or NULL when this CPU (or compiler) lacks them. */
const kiln_cpu_kernels *kiln_cpu_kernels_avx2(void);
/* The best table for this CPU; the portable one when KILN_CPU_GENERIC is set in the environment. */
const kiln_cpu_kernels *kiln_cpu_kernels_best(void);

#endif /* KILN_CPU_KERNELS_H */
