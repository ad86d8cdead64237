/*
 * Random weights for benchmarks and tests: kiln_model_random.
 *
 * Every element is a pure function of (seed, tensor index, element index), so the result does not depend on how
 * many threads fill it. The generator is one splitmix64 finaliser per pair of elements; each normal deviate is the
 * Irwin-Hall sum of four 8-bit lanes of its 32-bit half, rescaled to unit variance (close to normal, bounded at
 * +-3.46 sigma, in steps of 1/148 sigma: all a benchmark or a shape test needs, and far cheaper than Box-Muller).
 * Matrices and biases get std 0.02; RMSNorm weights 1 + 0.02 * z. Threads split the elements of all tensors
 * evenly; a Qwen3-0.6B-shaped model (1.2 GB of bf16) takes about 2 s of CPU time.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kiln/half.h"
#include "kiln/model.h"
#include "kiln/status.h"
#include "model/config.h"
#include "model/model_impl.h"

#define RANDOM_ALIGN 64
#define RANDOM_MAX_THREADS 16

typedef struct fill_job {
  const kiln_wspec *specs;
  const uint64_t *first; /* [n+1]: global index of each tensor's first element */
  size_t n;
  uint64_t seed;
  kiln_dtype dt;
  uint64_t lo, hi;       /* global element range of this job */
} fill_job;

static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Approximately standard normal from 32 random bits: the sum of four U{0..255} has mean 510 and standard
 * deviation sqrt(4 * (256^2 - 1) / 12). */
static inline float irwin_hall4(uint32_t r) {
  uint32_t s = (r & 0xff) + ((r >> 8) & 0xff) + ((r >> 16) & 0xff) + (r >> 24);
  return ((float)s - 510.0f) * (1.0f / 147.8017f);
}

static inline float to_f32(float v) { return v; }

/* Element i of a tensor takes the (i & 1) half of hash(i >> 1); one loop per dtype so each is specialised. */
#define FILL_LOOP(T, CONV)                                                                                         \
  do {                                                                                                             \
    T *out_ = (T *)data;                                                                                           \
    uint64_t i_ = i0;                                                                                              \
    if (i_ < i1 && (i_ & 1)) {                                                                                     \
      uint64_t r_ = mix64(stream + (i_ >> 1) * 0x9e3779b97f4a7c15ull);                                             \
      out_[i_] = CONV(mean + 0.02f * irwin_hall4((uint32_t)(r_ >> 32)));                                           \
      i_++;                                                                                                        \
    }                                                                                                              \
    for (; i_ + 1 < i1; i_ += 2) {                                                                                 \
      uint64_t r_ = mix64(stream + (i_ >> 1) * 0x9e3779b97f4a7c15ull);                                             \
      out_[i_] = CONV(mean + 0.02f * irwin_hall4((uint32_t)r_));                                                   \
      out_[i_ + 1] = CONV(mean + 0.02f * irwin_hall4((uint32_t)(r_ >> 32)));                                       \
    }                                                                                                              \
    if (i_ < i1) {                                                                                                 \
      uint64_t r_ = mix64(stream + (i_ >> 1) * 0x9e3779b97f4a7c15ull);                                             \
      out_[i_] = CONV(mean + 0.02f * irwin_hall4((uint32_t)r_));                                                   \
    }                                                                                                              \
  } while (0)

static void fill_range(const fill_job *j) {
  size_t t = 0;
  while (t < j->n && j->first[t + 1] <= j->lo) t++;
  for (uint64_t g = j->lo; g < j->hi && t < j->n; t++) {
    const kiln_wspec *s = &j->specs[t];
    uint64_t end = j->first[t + 1] < j->hi ? j->first[t + 1] : j->hi;
    uint64_t i0 = g - j->first[t], i1 = end - j->first[t];
    float mean = s->is_norm ? 1.0f : 0.0f;
    uint64_t stream = mix64(j->seed ^ mix64((uint64_t)t + 0x9e3779b97f4a7c15ull));
    void *data = (void *)s->slot->data;
    switch (j->dt) {
    case KILN_F32: FILL_LOOP(float, to_f32); break;
    case KILN_BF16: FILL_LOOP(uint16_t, kiln_f32_to_bf16); break;
    case KILN_F16: FILL_LOOP(uint16_t, kiln_f32_to_f16); break;
    }
    g = end;
  }
}

static void *fill_thread(void *arg) {
  fill_range(arg);
  return NULL;
}

int kiln_model_random(kiln_model **out, const kiln_config *cfg, kiln_dtype dt, uint64_t seed) {
  if (!out) return kiln_error(KILN_EINVAL, "kiln_model_random: NULL argument");
  *out = NULL;
  if (!cfg) return kiln_error(KILN_EINVAL, "kiln_model_random: NULL config");
  if (dt != KILN_F32 && dt != KILN_F16 && dt != KILN_BF16)
    return kiln_error(KILN_EINVAL, "kiln_model_random: unknown dtype %d", (int)dt);
  int rc = kiln_config_check(cfg, "random model config");
  if (rc != KILN_OK) return rc;
  kiln_model *m = kiln_model_alloc_(cfg);
  if (!m) return KILN_ENOMEM;
  kiln_wspec *specs = NULL;
  size_t n = 0;
  uint64_t *first = NULL;
  if ((rc = kiln_model_specs_(m, &specs, &n)) != KILN_OK) goto done;
  first = malloc((n + 1) * sizeof *first);
  if (!first) {
    rc = kiln_error(KILN_ENOMEM, "random model: out of memory");
    goto done;
  }
  /* Lay the tensors out in one block, each on a RANDOM_ALIGN boundary. Sizes are bounded by kiln_config_check
   * (vocab <= 2^24, hidden <= 2^18, ...), so these sums fit in 64 bits. */
  size_t esz = kiln_dtype_size(dt), bytes = 0;
  first[0] = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t numel = (uint64_t)specs[i].shape[0] * (uint64_t)(specs[i].ndim == 2 ? specs[i].shape[1] : 1);
    first[i + 1] = first[i] + numel;
    bytes += (numel * esz + RANDOM_ALIGN - 1) / RANDOM_ALIGN * RANDOM_ALIGN;
  }
  kiln_model_impl *impl = m->impl;
  /* Large blocks on 2 MiB boundaries, so that transparent huge pages (asked for, best effort) can back them: fewer
   * page faults while filling and fewer TLB misses while the engine streams the weights. */
  size_t align = bytes >= ((size_t)64 << 20) ? ((size_t)2 << 20) : RANDOM_ALIGN;
  bytes = (bytes + align - 1) / align * align;
  impl->owned = bytes ? aligned_alloc(align, bytes) : NULL;
  if (bytes && !impl->owned) {
    rc = kiln_error(KILN_ENOMEM, "random model: cannot allocate %zu bytes of weights", bytes);
    goto done;
  }
#ifdef MADV_HUGEPAGE
  if (align > RANDOM_ALIGN) (void)madvise(impl->owned, bytes, MADV_HUGEPAGE);
#endif
  size_t off = 0;
  for (size_t i = 0; i < n; i++) {
    kiln_tensor *t = specs[i].slot;
    uint64_t numel = first[i + 1] - first[i];
    t->data = (uint8_t *)impl->owned + off;
    t->dtype = dt;
    t->ndim = specs[i].ndim;
    t->shape[0] = specs[i].shape[0];
    t->shape[1] = specs[i].ndim == 2 ? specs[i].shape[1] : 0;
    off += (numel * esz + RANDOM_ALIGN - 1) / RANDOM_ALIGN * RANDOM_ALIGN;
    m->weight_bytes += numel * esz;
  }
  if (cfg->tie_word_embeddings) m->lm_head = m->embed;

  uint64_t total = first[n];
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int nt = total < (1u << 20) ? 1 : (int)(ncpu < 1 ? 1 : ncpu > RANDOM_MAX_THREADS ? RANDOM_MAX_THREADS : ncpu);
  fill_job jobs[RANDOM_MAX_THREADS];
  pthread_t tid[RANDOM_MAX_THREADS];
  bool started[RANDOM_MAX_THREADS] = {false};
  for (int k = 0; k < nt; k++) {
    jobs[k] = (fill_job){specs, first, n, seed, dt, total * (uint64_t)k / (uint64_t)nt,
                         total * (uint64_t)(k + 1) / (uint64_t)nt};
    /* Job 0 runs on this thread; a thread that cannot start has its share done here as well. */
    if (k > 0) started[k] = pthread_create(&tid[k], NULL, fill_thread, &jobs[k]) == 0;
  }
  fill_range(&jobs[0]);
  for (int k = 1; k < nt; k++) {
    if (started[k])
      pthread_join(tid[k], NULL);
    else
      fill_range(&jobs[k]);
  }
done:
  free(first);
  free(specs);
  if (rc != KILN_OK) {
    kiln_model_free(m);
    return rc;
  }
  *out = m;
  return KILN_OK;
}
