/* The plain reference ops (see ref_ops.h). One loop nest per op; sums in double. */
#include "backend/cpu/ref_ops.h"

#include <math.h>

#define KILN_PI 3.14159265358979323846

void kiln_ref_embed(float *out, const void *table, kiln_dtype dt, int64_t hidden, const int32_t *ids, int64_t n) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < hidden; j++) out[t * hidden + j] = kiln_weight_at(table, dt, (int64_t)ids[t] * hidden + j);
}

void kiln_ref_rmsnorm(float *out, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t dim,
                      float eps) {
  for (int64_t t = 0; t < n; t++) {
    const float *xr = x + t * dim;
    float *yr = out + t * dim;
    double ss = 0;
    for (int64_t j = 0; j < dim; j++) ss += (double)xr[j] * xr[j];
    /* HF: variance = mean(x^2) in f32; x * rsqrt(variance + eps); then weight * that. */
    float inv = (float)(1.0 / sqrt(ss / (double)dim + (double)eps));
    for (int64_t j = 0; j < dim; j++) yr[j] = kiln_weight_at(w, wdt, j) * (xr[j] * inv);
  }
}

void kiln_ref_add_rmsnorm(float *out, float *x, const float *r, const void *w, kiln_dtype wdt, int64_t n,
                          int64_t dim, float eps) {
  kiln_ref_add(x, r, n * dim);
  kiln_ref_rmsnorm(out, x, w, wdt, n, dim, eps);
}

void kiln_ref_matmul(float *y, const float *x, const void *w, kiln_dtype wdt, int64_t n, int64_t in, int64_t out) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t o = 0; o < out; o++) {
      double acc = 0;
      for (int64_t i = 0; i < in; i++) acc += (double)x[t * in + i] * kiln_weight_at(w, wdt, o * in + i);
      y[t * out + o] = (float)acc;
    }
}

void kiln_ref_add_bias(float *y, const void *b, kiln_dtype bdt, int64_t n, int64_t dim) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t j = 0; j < dim; j++) y[t * dim + j] += kiln_weight_at(b, bdt, j);
}

void kiln_ref_add(float *x, const float *r, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] += r[i];
}

void kiln_ref_rope_inv_freq(float *inv_freq, const kiln_config *cfg) {
  const int64_t d = cfg->head_dim, half = d / 2;
  /* base ** (arange(0, d, 2).float() / d) in f32, then 1.0 / that in f32. */
  const float base = (float)cfg->rope_theta;
  for (int64_t i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)d;
    float p = (float)pow((double)base, (double)e);
    inv_freq[i] = 1.0f / p;
  }
  if (cfg->rope_type != KILN_ROPE_LLAMA3) return;
  /* _compute_llama3_parameters, step by step in f32 as torch evaluates it. */
  const float factor = (float)cfg->rope_factor;
  const float low = (float)cfg->rope_low_freq_factor, high = (float)cfg->rope_high_freq_factor;
  const float old_ctx = (float)cfg->rope_original_max_position;
  const float low_wavelen = (float)((double)cfg->rope_original_max_position / cfg->rope_low_freq_factor);
  const float high_wavelen = (float)((double)cfg->rope_original_max_position / cfg->rope_high_freq_factor);
  for (int64_t i = 0; i < half; i++) {
    float f = inv_freq[i];
    /* wavelen = 2*pi / inv_freq is reciprocal(inv_freq) * 2*pi for a tensor on the right. */
    float wavelen = (1.0f / f) * (float)(2.0 * KILN_PI);
    /* comparisons with a Python float run in the tensor's dtype */
    float g = wavelen > low_wavelen ? f / factor : f;
    int medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
    if (medium) {
      /* old_ctx / wavelen is reciprocal(wavelen) * old_ctx; (1 - s) * g / factor + s * g, left to right */
      float smooth = ((1.0f / wavelen) * old_ctx - low) / (high - low);
      g = (1.0f - smooth) * g / factor + smooth * g;
    }
    inv_freq[i] = g;
  }
}

void kiln_ref_rope(float *x, const int32_t *pos, int64_t n, int64_t n_heads, int64_t head_dim,
                   const float *inv_freq) {
  const int64_t half = head_dim / 2;
  for (int64_t t = 0; t < n; t++)
    for (int64_t h = 0; h < n_heads; h++) {
      float *v = x + (t * n_heads + h) * head_dim;
      for (int64_t i = 0; i < half; i++) {
        float a = inv_freq[i] * (float)pos[t]; /* f32 product, as HF's inv_freq @ position_ids */
        float c = (float)cos((double)a), s = (float)sin((double)a);
        float x0 = v[i], x1 = v[i + half];
        v[i] = x0 * c - x1 * s;
        v[i + half] = x1 * c + x0 * s;
      }
    }
}

void kiln_ref_attention(float *out, const float *q, const float *k, const float *v, int64_t n, int64_t pos0,
                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim) {
  const int64_t group = n_heads / n_kv_heads, kv_stride = n_kv_heads * head_dim;
  const double scale = 1.0 / sqrt((double)head_dim);
  for (int64_t t = 0; t < n; t++) {
    const int64_t len = pos0 + t + 1;
    for (int64_t h = 0; h < n_heads; h++) {
      const float *qh = q + (t * n_heads + h) * head_dim;
      const int64_t kvh = h / group;
      /* pass 1: the maximum score */
      double mx = -INFINITY;
      for (int64_t p = 0; p < len; p++) {
        const float *kp = k + p * kv_stride + kvh * head_dim;
        double s = 0;
        for (int64_t i = 0; i < head_dim; i++) s += (double)qh[i] * kp[i];
        s *= scale;
        if (s > mx) mx = s;
      }
      /* pass 2: weights and the weighted sum of values */
      double sum = 0;
      float *oh = out + (t * n_heads + h) * head_dim;
      double acc[KILN_REF_MAX_HEAD_DIM] = {0};
      for (int64_t p = 0; p < len; p++) {
        const float *kp = k + p * kv_stride + kvh * head_dim;
        const float *vp = v + p * kv_stride + kvh * head_dim;
        double s = 0;
        for (int64_t i = 0; i < head_dim; i++) s += (double)qh[i] * kp[i];
        double wgt = exp(s * scale - mx);
        sum += wgt;
        for (int64_t i = 0; i < head_dim; i++) acc[i] += wgt * vp[i];
      }
      for (int64_t i = 0; i < head_dim; i++) oh[i] = (float)(acc[i] / sum);
    }
  }
}

void kiln_ref_swiglu(float *out, const float *gate, const float *up, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    double g = gate[i];
    out[i] = (float)(g / (1.0 + exp(-g)) * up[i]);
  }
}

void kiln_ref_softmax(float *out, const float *x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; i++)
    if (x[i] > mx) mx = x[i];
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
  for (int64_t i = 0; i < n; i++) out[i] = (float)(exp((double)x[i] - mx) / sum);
}

void kiln_ref_log_softmax(float *out, const float *x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; i++)
    if (x[i] > mx) mx = x[i];
  double sum = 0;
  for (int64_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
  double lse = mx + log(sum);
  for (int64_t i = 0; i < n; i++) out[i] = (float)((double)x[i] - lse);
}

int64_t kiln_ref_argmax(const float *x, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; i++)
    if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
  return best;
}
