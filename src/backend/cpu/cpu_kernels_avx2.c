/*
 * The AVX2/FMA/F16C kernel table (see cpu_kernels.h).
 *
 * Every function carries a target attribute, so this file builds without -mavx2 and the table is only handed out
 * when __builtin_cpu_supports() says the CPU runs it.
 *
 * Weights are consumed 16 at a time as two vectors of 8 f32 ("lo" and "hi"):
 *   bf16: one 32-byte load; a bf16 is the top half of an f32, so shifting each 32-bit lane left by 16 gives the
 *         even elements and masking off the low half gives the odd ones (2 integer ops for 16 weights). x is
 *         prepared as the matching 8 evens then 8 odds per block of 16.
 *   f16:  two vcvtph2ps of 8;  f32: two loads of 8. x keeps its natural order.
 * A row tail shorter than 16 is done in scalar code on the natural order (prep_x leaves the tail as is).
 *
 * Decode (one token) is bound by the bandwidth at which the weights stream from DRAM: rows are read one after
 * the other in one sequential stream with a software prefetch ahead (see mm_1x1). Prefill (n >= 4 tokens) is a
 * packed GEMM (see gemm_).
 */
#include "backend/cpu/cpu_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <cpuid.h>
#include <stdbool.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/ref_ops.h"

#define AVX2_FN __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Software prefetch distance of the decode kernel, in bytes ahead of the weights being read. */
#define KILN_PF 1024
/* From this many tokens on, a matmul is the packed GEMM (x in natural order); below, the GEMV kernel. */
#define KILN_GEMM_MIN_N 4

AVX2_INLINE float hsum_(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* ---- loading 16 weights as lo/hi vectors ---- */

AVX2_INLINE void load_bf16_(const void *w, int64_t k, __m256 *lo, __m256 *hi) {
  __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + k));
  *lo = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  *hi = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

AVX2_INLINE void load_f16_(const void *w, int64_t k, __m256 *lo, __m256 *hi) {
  const uint16_t *p = (const uint16_t *)w + k;
  *lo = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
  *hi = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
}

AVX2_INLINE void load_f32_(const void *w, int64_t k, __m256 *lo, __m256 *hi) {
  const float *p = (const float *)w + k;
  *lo = _mm256_loadu_ps(p);
  *hi = _mm256_loadu_ps(p + 8);
}

/* ---- prep_x ---- */

AVX2_FN static void prep_x_(float *xp, const float *x, int64_t n, int64_t in, kiln_dtype dt) {
  if (dt != KILN_BF16 || n >= KILN_GEMM_MIN_N) { /* the packed GEMM reads x in its natural order */
    memcpy(xp, x, (size_t)(n * in) * sizeof *x);
    return;
  }
  const int64_t in16 = in & ~(int64_t)15;
  const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
  for (int64_t t = 0; t < n; t++) {
    const float *xr = x + t * in;
    float *pr = xp + t * in;
    for (int64_t k = 0; k < in16; k += 16) {
      /* a = x0..x7 -> [x0 x2 x4 x6 | x1 x3 x5 x7]; b likewise for x8..x15; then gather evens and odds. */
      __m256 a = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr + k), idx);
      __m256 b = _mm256_permutevar8x32_ps(_mm256_loadu_ps(xr + k + 8), idx);
      _mm256_storeu_ps(pr + k, _mm256_permute2f128_ps(a, b, 0x20));
      _mm256_storeu_ps(pr + k + 8, _mm256_permute2f128_ps(a, b, 0x31));
    }
    for (int64_t k = in16; k < in; k++) pr[k] = xr[k];
  }
}

/* ---- prefill: packed GEMM ---- */

/* Prefill multiplies n >= KILN_GEMM_MIN_N tokens by the weights the way BLAS does: a panel of KILN_NR = 16 output
 * rows by KILN_KC inputs is converted to f32 and transposed once ("packed", 16 KiB, stays in L1), then every tile
 * of KILN_MR = 6 tokens runs over it: per input k, two loads of the panel (16 outputs), six broadcasts of x and 12
 * FMAs into 12 accumulators (6 tokens x 16 outputs). The weight conversion is paid once per panel rather than once
 * per token tile, and each weight row comes from DRAM once per call. */
#define KILN_NR 16
#define KILN_MR 6
#define KILN_KC 256

/* 8 weights of row `r` from column k as f32. */
AVX2_INLINE __m256 load8_(const void *w, kiln_dtype dt, int64_t i) {
  switch (dt) {
  case KILN_BF16:
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
  case KILN_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
  default: return _mm256_loadu_ps((const float *)w + i);
  }
}

/* In-register transpose of 8 rows of 8 floats. */
AVX2_INLINE void transpose8_(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* pk[k][16] = W[o + j][k0 + k] as f32 for j < rows (0 for the rest), k < kc. */
AVX2_INLINE void pack_(float *pk, const void *w, kiln_dtype dt, int64_t in, int64_t o, int rows, int64_t k0,
                       int64_t kc) {
  const int64_t kc8 = kc & ~(int64_t)7;
  for (int half = 0; half < 2; half++)
    for (int64_t k = 0; k < kc8; k += 8) {
      __m256 r[8];
      for (int j = 0; j < 8; j++) {
        const int row = half * 8 + j;
        r[j] = row < rows ? load8_(w, dt, (o + row) * in + k0 + k) : _mm256_setzero_ps();
      }
      transpose8_(r);
      for (int j = 0; j < 8; j++) _mm256_storeu_ps(pk + (k + j) * KILN_NR + half * 8, r[j]);
    }
  for (int64_t k = kc8; k < kc; k++)
    for (int j = 0; j < KILN_NR; j++) pk[k * KILN_NR + j] = j < rows ? kiln_weight_at(w, dt, (o + j) * in + k0 + k) : 0;
}

/* y[t][0..cols) (+)= sum_k x[t][k] pk[k][0..cols) for t < MR. */
#define KILN_DEFINE_TILE(MR)                                                                                      \
  AVX2_INLINE void tile_##MR(float *y, int64_t ldy, const float *x, int64_t in, const float *pk, int64_t kc,      \
                             int add, int cols) {                                                                 \
    __m256 c[2 * MR]; /* every loop over c is unrolled so the array lives in registers */                       \
    _Pragma("GCC unroll 12") for (int i = 0; i < 2 * MR; i++) c[i] = _mm256_setzero_ps();                         \
    for (int64_t k = 0; k < kc; k++) {                                                                            \
      const __m256 w0 = _mm256_loadu_ps(pk + k * KILN_NR), w1 = _mm256_loadu_ps(pk + k * KILN_NR + 8);            \
      _Pragma("GCC unroll 6") for (int t = 0; t < MR; t++) {                                                      \
        const __m256 b = _mm256_broadcast_ss(x + t * in + k);                                                     \
        c[2 * t] = _mm256_fmadd_ps(b, w0, c[2 * t]);                                                              \
        c[2 * t + 1] = _mm256_fmadd_ps(b, w1, c[2 * t + 1]);                                                      \
      }                                                                                                           \
    }                                                                                                             \
    _Pragma("GCC unroll 6") for (int t = 0; t < MR; t++) {                                                      \
      float *yr = y + t * ldy;                                                                                    \
      if (cols == KILN_NR) {                                                                                      \
        if (add) {                                                                                                \
          c[2 * t] = _mm256_add_ps(c[2 * t], _mm256_loadu_ps(yr));                                                \
          c[2 * t + 1] = _mm256_add_ps(c[2 * t + 1], _mm256_loadu_ps(yr + 8));                                    \
        }                                                                                                         \
        _mm256_storeu_ps(yr, c[2 * t]);                                                                           \
        _mm256_storeu_ps(yr + 8, c[2 * t + 1]);                                                                   \
      } else {                                                                                                    \
        float tmp[KILN_NR];                                                                                       \
        _mm256_storeu_ps(tmp, c[2 * t]);                                                                          \
        _mm256_storeu_ps(tmp + 8, c[2 * t + 1]);                                                                  \
        for (int j = 0; j < cols; j++) yr[j] = add ? yr[j] + tmp[j] : tmp[j];                                     \
      }                                                                                                           \
    }                                                                                                             \
  }
KILN_DEFINE_TILE(1)
KILN_DEFINE_TILE(2)
KILN_DEFINE_TILE(3)
KILN_DEFINE_TILE(4)
KILN_DEFINE_TILE(5)
KILN_DEFINE_TILE(6)

AVX2_FN static void gemm_(float *y, int64_t ldy, const float *x, int64_t n, const void *w, kiln_dtype dt,
                          int64_t in, int64_t o0, int64_t o1) {
  float pk[KILN_KC * KILN_NR];
  for (int64_t o = o0; o < o1; o += KILN_NR) {
    const int rows = o1 - o < KILN_NR ? (int)(o1 - o) : KILN_NR;
    for (int64_t k0 = 0; k0 < in; k0 += KILN_KC) {
      const int64_t kc = in - k0 < KILN_KC ? in - k0 : KILN_KC;
      const int add = k0 > 0;
      pack_(pk, w, dt, in, o, rows, k0, kc);
      for (int64_t t = 0; t < n; t += KILN_MR) {
        float *yt = y + t * ldy + o;
        const float *xt = x + t * in + k0;
        switch (n - t < KILN_MR ? n - t : KILN_MR) {
        case 1: tile_1(yt, ldy, xt, in, pk, kc, add, rows); break;
        case 2: tile_2(yt, ldy, xt, in, pk, kc, add, rows); break;
        case 3: tile_3(yt, ldy, xt, in, pk, kc, add, rows); break;
        case 4: tile_4(yt, ldy, xt, in, pk, kc, add, rows); break;
        case 5: tile_5(yt, ldy, xt, in, pk, kc, add, rows); break;
        default: tile_6(yt, ldy, xt, in, pk, kc, add, rows); break;
        }
      }
    }
  }
}

/* ---- matmul, instantiated per weight dtype ---- */

#define KILN_DEFINE_MATMUL(SUF, LOADW)                                                                            \
  /* one token, one row: the decode kernel. Rows are read one after the other, so the weights stream through   \
   * memory in a single sequential pass (four rows at once made four short streams, which the hardware         \
   * prefetcher tracked badly: half the bandwidth); a software prefetch KILN_PF bytes ahead covers the start of  \
   * each next row and page. 32 weights per step, four accumulators. */                                        \
  AVX2_INLINE float mm_1x1_##SUF(const float *x, const void *w, kiln_dtype dt, int64_t in, int64_t o) {           \
    const int64_t in32 = in & ~(int64_t)31, in16 = in & ~(int64_t)15;                                             \
    const char *row = (const char *)w + o * in * (int64_t)kiln_dtype_size(dt);                                    \
    const int64_t esz = (int64_t)kiln_dtype_size(dt);                                                             \
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(); \
    int64_t k = 0;                                                                                                \
    for (; k < in32; k += 32) {                                                                                   \
      _mm_prefetch(row + k * esz + KILN_PF, _MM_HINT_T0);                                                         \
      if (esz == 4) _mm_prefetch(row + k * esz + KILN_PF + 64, _MM_HINT_T0);                                      \
      __m256 l0, h0, l1, h1;                                                                                      \
      LOADW(w, o * in + k, &l0, &h0);                                                                             \
      LOADW(w, o * in + k + 16, &l1, &h1);                                                                        \
      a0 = _mm256_fmadd_ps(l0, _mm256_loadu_ps(x + k), a0);                                                       \
      a1 = _mm256_fmadd_ps(h0, _mm256_loadu_ps(x + k + 8), a1);                                                   \
      a2 = _mm256_fmadd_ps(l1, _mm256_loadu_ps(x + k + 16), a2);                                                  \
      a3 = _mm256_fmadd_ps(h1, _mm256_loadu_ps(x + k + 24), a3);                                                  \
    }                                                                                                             \
    for (; k < in16; k += 16) {                                                                                   \
      __m256 lo, hi;                                                                                              \
      LOADW(w, o * in + k, &lo, &hi);                                                                             \
      a0 = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x + k), a0);                                                       \
      a1 = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + k + 8), a1);                                                   \
    }                                                                                                             \
    float s = hsum_(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));                                 \
    for (; k < in; k++) s += x[k] * kiln_weight_at(w, dt, o * in + k);                                            \
    return s;                                                                                                     \
  }                                                                                                               \
  AVX2_FN static void matmul_##SUF(float *y, int64_t ldy, const float *xp, int64_t n, const void *w,             \
                                   kiln_dtype dt, int64_t in, int64_t o0, int64_t o1) {                           \
    if (n >= KILN_GEMM_MIN_N) {                                                                                   \
      gemm_(y, ldy, xp, n, w, dt, in, o0, o1);                                                                    \
      return;                                                                                                     \
    }                                                                                                             \
    for (int64_t t = 0; t < n; t++)                                                                               \
      for (int64_t o = o0; o < o1; o++) y[t * ldy + o] = mm_1x1_##SUF(xp + t * in, w, dt, in, o);                 \
  }

KILN_DEFINE_MATMUL(bf16, load_bf16_)
KILN_DEFINE_MATMUL(f16, load_f16_)
KILN_DEFINE_MATMUL(f32, load_f32_)

AVX2_FN static void matmul_(float *y, int64_t ldy, const float *xp, int64_t n, const void *w, kiln_dtype dt,
                            int64_t in, int64_t o0, int64_t o1) {
  switch (dt) {
  case KILN_BF16: matmul_bf16(y, ldy, xp, n, w, dt, in, o0, o1); break;
  case KILN_F16: matmul_f16(y, ldy, xp, n, w, dt, in, o0, o1); break;
  default: matmul_f32(y, ldy, xp, n, w, dt, in, o0, o1); break;
  }
}

/* ---- attention helpers ---- */

AVX2_FN static float dot_(const float *a, const float *b, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum_(_mm256_add_ps(s0, s1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

AVX2_FN static void axpy_(float *y, float a, const float *x, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

/* e^x for 8 lanes, the Cephes single-precision scheme: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two parts so
 * n ln2 is exact), e^r by a degree-7 polynomial, times 2^n built in the exponent field. Within 2 ulp for
 * x in [-87.3, 88.7]; inputs below are clamped (the result is then ~1e-38, as good as 0 in a softmax). */
AVX2_INLINE __m256 exp_ps_(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.7f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

AVX2_FN static void softmax_(float *x, int64_t n) {
  if (n <= 0) return;
  int64_t i = 0;
  __m256 mv = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
  float mx = -INFINITY;
  float lanes[8];
  _mm256_storeu_ps(lanes, mv);
  for (int k = 0; k < 8; k++) mx = lanes[k] > mx ? lanes[k] : mx;
  for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 sv = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 e = exp_ps_(_mm256_sub_ps(_mm256_loadu_ps(x + i), m8));
    _mm256_storeu_ps(x + i, e);
    sv = _mm256_add_ps(sv, e);
  }
  float sum = hsum_(sv);
  for (; i < n; i++) {
    x[i] = expf(x[i] - mx);
    sum += x[i];
  }
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; i++) x[i] *= 1.0f / sum;
}

static const kiln_cpu_kernels avx2_table_ = {
    .name = "avx2", .prep_x = prep_x_, .matmul = matmul_, .dot = dot_, .axpy = axpy_, .softmax = softmax_,
};

/* F16C is CPUID leaf 1, ECX bit 29; read it directly because clang 14's __builtin_cpu_supports does not know
 * the "f16c" feature name (gcc does). Every AVX2 CPU has it, but a hypervisor may hide it. */
static bool has_f16c_(void) {
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29)) != 0;
}

const kiln_cpu_kernels *kiln_cpu_kernels_avx2(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c_()) return &avx2_table_;
  return NULL;
}

#else /* not x86-64 with GCC/Clang */

const kiln_cpu_kernels *kiln_cpu_kernels_avx2(void) { return NULL; }

#endif
