/* The portable kernel table (see cpu_kernels.h): plain C, four partial sums so the compiler can vectorise. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/ref_ops.h"

static void prep_x_(float *xp, const float *x, int64_t n, int64_t in, kiln_dtype dt) {
  (void)dt;
  memcpy(xp, x, (size_t)(n * in) * sizeof *x);
}

static float dot_(const float *a, const float *b, int64_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; i++) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

static void axpy_(float *y, float a, const float *x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* One weight row against n tokens; the row is widened to f32 in `row` first (at most KILN_GENERIC_CHUNK at a time
 * so it stays on the stack), then each token's partial dot product is added. */
#define KILN_GENERIC_CHUNK 1024

static void matmul_(float *y, int64_t ldy, const float *xp, int64_t n, const void *w, kiln_dtype dt, int64_t in,
                    int64_t o0, int64_t o1) {
  float row[KILN_GENERIC_CHUNK];
  for (int64_t o = o0; o < o1; o++) {
    for (int64_t t = 0; t < n; t++) y[t * ldy + o] = 0;
    for (int64_t k0 = 0; k0 < in; k0 += KILN_GENERIC_CHUNK) {
      int64_t len = in - k0 < KILN_GENERIC_CHUNK ? in - k0 : KILN_GENERIC_CHUNK;
      const float *wr;
      if (dt == KILN_F32) {
        wr = (const float *)w + o * in + k0;
      } else {
        for (int64_t i = 0; i < len; i++) row[i] = kiln_weight_at(w, dt, o * in + k0 + i);
        wr = row;
      }
      for (int64_t t = 0; t < n; t++) y[t * ldy + o] += dot_(xp + t * in + k0, wr, len);
    }
  }
}

const kiln_cpu_kernels kiln_cpu_kernels_generic = {
    .name = "generic", .prep_x = prep_x_, .matmul = matmul_, .dot = dot_, .axpy = axpy_, .softmax = kiln_cpu_softmax,
};

const kiln_cpu_kernels *kiln_cpu_kernels_best(void) {
  const char *env = getenv("KILN_CPU_GENERIC");
  if (env && *env && strcmp(env, "0") != 0) return &kiln_cpu_kernels_generic;
  const kiln_cpu_kernels *k = kiln_cpu_kernels_avx2();
  return k ? k : &kiln_cpu_kernels_generic;
}
