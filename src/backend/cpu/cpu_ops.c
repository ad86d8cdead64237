/* The small per-token ops of the fast CPU forward pass (see cpu_ops.h). */
#include "backend/cpu/cpu_ops.h"

#include <math.h>

#include "backend/cpu/ref_ops.h"

void kiln_cpu_rmsnorm(float *out, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t dim, float eps) {
  for (int64_t t = 0; t < n; t++) {
    const float *xr = x + t * dim;
    float *yr = out + t * dim;
    /* eight partial sums: vectorisable, and more accurate than one running sum */
    float ss[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= dim; j += 8)
      for (int u = 0; u < 8; u++) ss[u] += xr[j + u] * xr[j + u];
    for (; j < dim; j++) ss[0] += xr[j] * xr[j];
    float sum = ((ss[0] + ss[1]) + (ss[2] + ss[3])) + ((ss[4] + ss[5]) + (ss[6] + ss[7]));
    const float inv = 1.0f / sqrtf(sum / (float)dim + eps);
    switch (wdt) {
    case KILN_F32:
      for (j = 0; j < dim; j++) yr[j] = ((const float *)w)[j] * (xr[j] * inv);
      break;
    case KILN_BF16:
      for (j = 0; j < dim; j++) yr[j] = kiln_bf16_to_f32(((const uint16_t *)w)[j]) * (xr[j] * inv);
      break;
    default:
      for (j = 0; j < dim; j++) yr[j] = kiln_f16_to_f32(((const uint16_t *)w)[j]) * (xr[j] * inv);
      break;
    }
  }
}

void kiln_cpu_add_rmsnorm(float *out, float *x, const float *r, const void *w, kiln_dtype wdt, int64_t n,
                          int64_t dim, float eps) {
  for (int64_t i = 0; i < n * dim; i++) x[i] += r[i];
  kiln_cpu_rmsnorm(out, x, w, wdt, n, dim, eps);
}

void kiln_cpu_rope_table(float *cs, const int32_t *pos, int64_t n, int64_t head_dim, const float *inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < n; t++)
    for (int64_t i = 0; i < half; i++) {
      float a = inv_freq[i] * (float)pos[t]; /* the f32 angle, as HF's inv_freq @ position_ids */
      cs[t * head_dim + i] = (float)cos((double)a);
      cs[t * head_dim + half + i] = (float)sin((double)a);
    }
}

void kiln_cpu_rope_head(float *v, const float *cs, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  const float *c = cs, *s = cs + half;
  for (int64_t i = 0; i < half; i++) {
    float x0 = v[i], x1 = v[i + half];
    v[i] = x0 * c[i] - x1 * s[i];
    v[i + half] = x1 * c[i] + x0 * s[i];
  }
}

void kiln_cpu_swiglu(float *out, const float *gate, const float *up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

void kiln_cpu_softmax(float *x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  float sum = 0;
  for (int64_t i = 0; i < n; i++) {
    x[i] = expf(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; i++) x[i] *= inv;
}
