/*
 * backend/cuda/gemv.h (internal): the decode matrix-vector product y = W x, with W bf16 [n_rows][k] read once with
 * 16-byte loads, f32 accumulation, and the prologue and epilogue that let a decode step skip separate norm,
 * residual and activation kernels:
 *   prologue: x is bf16, or f32 passed through RMSNorm (norm_w, eps) or plain rounding to bf16;
 *   epilogue: STORE y = Wx (+ bias), ADD y += Wx (+ bias) (the residual stream), SWIGLU (rows interleaved gate0, up0,
 *   gate1, up1, ...: y_bf16[i] = bf16(silu(gate_i) up_i)), or ARGMAX (STORE, and the largest value with its
 *   lowest index folded into *argmax with one 64-bit atomicMax per block).
 */
#ifndef KILN_CUDA_GEMV_H
#define KILN_CUDA_GEMV_H

#include <stdint.h>
#include <string.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_cuda_gemv_mode {
  KILN_GEMV_STORE = 0,
  KILN_GEMV_ADD = 1,
  KILN_GEMV_SWIGLU = 2,
  KILN_GEMV_ARGMAX = 3,
} kiln_cuda_gemv_mode;

typedef struct kiln_cuda_gemv_args {
  const uint16_t *w;          /* bf16 [n_rows][k], 16-byte aligned; k % 8 == 0 */
  int64_t n_rows, k;
  const uint16_t *x_bf16;     /* [k] input, or NULL to use x_f32 */
  const float *x_f32;         /* [k] input when x_bf16 is NULL */
  const float *norm_w;        /* [k]: RMSNorm x_f32 with this weight first; NULL: no norm */
  float eps;
  kiln_cuda_gemv_mode mode;
  float *y;                   /* STORE, ADD, ARGMAX: f32 [n_rows] */
  const float *bias;          /* STORE, ADD: f32 [n_rows] or NULL */
  uint16_t *y_bf16;           /* SWIGLU: bf16 [n_rows / 2] (n_rows even) */
  unsigned long long *argmax; /* ARGMAX: must hold 0 before the launch; decode with kiln_cuda_argmax_index */
  /* Optional (NULL / 0: none): a byte range (16-byte aligned, a multiple of 16 long) each block prefetches its share
   * of into L2 once its own rows are done, so that the tail of this kernel, where finished SMs would leave HBM
   * idle, pulls in the weights the next kernel reads */
  const void *l2_next;
  int64_t l2_next_bytes;
  /* 0: the usual cap of blocks per SM; N > 0: at most N (below the cap), leaving the rest of each SM to the next
   * kernel of a PDL chain, whose blocks then start, and load their first weights, under this one's tail */
  int max_blocks_per_sm;
} kiln_cuda_gemv_args;

int kiln_cuda_gemv(const kiln_cuda_gemv_args *a, cudaStream_t stream);

/* Warps per row pair where a GEMV splits k (gemv.cu: long rows, few pairs): KILN_CUDA_GEMV_SPLIT, read at the first
 * call: unset or auto (KILN_GEMV_SPLIT_AUTO: 4 for rows of at least 8 chunks, 2 for 6 or 7, else 1), 1, 2 or 4
 * (tuning: that split where a warp keeps at least 2 chunks), all (KILN_GEMV_SPLIT_ALL, tuning: up to 4, down to one
 * chunk a warp). kiln_cuda_gemv_split_env: the mode a value names, -1 for any other. */
enum { KILN_GEMV_SPLIT_AUTO = 0, KILN_GEMV_SPLIT_ALL = 3 };
int kiln_cuda_gemv_split(void);
int kiln_cuda_gemv_split_env(const char *value);

/* The index an ARGMAX cell holds (-1 when nothing was folded in). */
static inline int64_t kiln_cuda_argmax_index(unsigned long long cell) {
  return cell == 0 ? -1 : (int64_t)(0xffffffffu - (uint32_t)(cell & 0xffffffffu));
}

/* The cell the ARGMAX GEMV leaves for value v at row (gemv_dev.cuh's kiln_pack_argmax, on the host: tests and
 * benchmarks that hand the sampler logits of their own). */
static inline unsigned long long kiln_cuda_argmax_pack(float v, int64_t row) {
  uint32_t u;
  memcpy(&u, &v, 4);
  const uint32_t key = (v != v) ? 0u : ((u & 0x80000000u) ? ~u : (u | 0x80000000u));
  return ((unsigned long long)key << 32) | (unsigned long long)(0xffffffffu - (uint32_t)row);
}

#ifdef __cplusplus
}
#endif
#endif
