/*
 * backend/cpu/cpu_ops.h (internal): the small per-token ops of the fast CPU forward pass, in plain C (they are a
 * few percent of a token's time; the matmuls and attention are in cpu_kernels.h). Same semantics as the
 * reference ops of the same name in ref_ops.h, in f32 arithmetic; tests/cpu/ checks them against those.
 */
#ifndef KILN_CPU_OPS_H
#define KILN_CPU_OPS_H

#include <stdint.h>

#include "kiln/model.h"

/* out[t] = w * x[t] / sqrt(mean(x[t]^2) + eps) for n rows of dim; in place when out == x. */
void kiln_cpu_rmsnorm(float *out, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t dim, float eps);
/* x += r, then out = rmsnorm(x). */
void kiln_cpu_add_rmsnorm(float *out, float *x, const float *r, const void *w, kiln_dtype wdt, int64_t n,
                          int64_t dim, float eps);
/* cs[t][0..h) = cos, cs[t][h..2h) = sin of the angles f32(inv_freq[i] * f32(pos[t])), h = head_dim/2. */
void kiln_cpu_rope_table(float *cs, const int32_t *pos, int64_t n, int64_t head_dim, const float *inv_freq);
/* Rotates one head vector v[head_dim] by the table row cs[head_dim] (rotate_half convention). */
void kiln_cpu_rope_head(float *v, const float *cs, int64_t head_dim);
/* out = silu(gate) * up, elementwise. */
void kiln_cpu_swiglu(float *out, const float *gate, const float *up, int64_t n);
/* x = softmax(x), in place. */
void kiln_cpu_softmax(float *x, int64_t n);

#endif /* KILN_CPU_OPS_H */
