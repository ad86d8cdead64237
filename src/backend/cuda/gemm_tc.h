/*
 * backend/cuda/gemm_tc.h (internal): kiln's own prefill matrix product on Hopper (sm_90a): TMA loads into a
 * pipeline of shared-memory stages, warpgroup MMAs (wgmma) from shared memory, f32 accumulation, and an epilogue
 * that writes what the next kernel wants: bf16, f32, f32 added to the residual, or SwiGLU applied to interleaved
 * (gate, up) column pairs. It exists for what cuBLAS cannot do: choose tiles for a prefill's few, wide products
 * (wave quantisation) and fuse SwiGLU into the gate/up product.
 */
#ifndef KILN_CUDA_GEMM_TC_H
#define KILN_CUDA_GEMM_TC_H

#include <stdint.h>

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/gemm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Output tiles (token rows x output columns), one block an SM, or two ("/2"). AUTO picks by the product's shape
 * and the SM count. */
typedef enum kiln_tc_tile {
  KILN_TC_AUTO = 0,
  KILN_TC_128x128,
  KILN_TC_64x128,
  KILN_TC_128x64,
  KILN_TC_128x192,
  KILN_TC_128x256,
  KILN_TC_64x256,
  KILN_TC_128x128_2,
  KILN_TC_64x128_2,
  KILN_TC_128x128c2, /* "c2", "c4": clusters of 2 or 4 row tiles that load W's tile once, by TMA multicast */
  KILN_TC_128x256c2,
  KILN_TC_64x128c2,
  KILN_TC_64x128c4,
  KILN_TC_128x128c2x2, /* clusters of 2 x 2 tiles: W's tile loaded once for 2 row tiles, x's once for 2 column tiles */
  KILN_TC_128x256c2x2,
  KILN_TC_128x128k2, /* "k2": pairs of blocks (a cluster) that split k and add their partial sums on chip */
  KILN_TC_128x256k2,
  KILN_TC_TILES
} kiln_tc_tile;

/* A tile by name: auto (or unset), or the name of one of the tiles (ROWSxCOLS, with /2, c2, c4, c2x2 or k2);
 * -1 for anything else. */
int kiln_cuda_gemm_tc_tile_env(const char *v);
/* The tile AUTO picks for n x in x out on n_sm SMs. */
kiln_tc_tile kiln_cuda_gemm_tc_auto(int64_t n, int64_t in, int64_t out, int n_sm);

/* 1 when this product can run here: the library carries sm_90a code, the current device is compute capability
 * 9.x, and the driver hands out its tensor-map encoder. */
int kiln_cuda_gemm_tc_available(void);

/* y = x W^T on the tensor cores: x bf16 [n][in], W bf16 [out][in] (nn.Linear layout), f32 accumulation, and y by
 * kind: KILN_GEMM_BF16 bf16 [n][out]; KILN_GEMM_F32 f32 [n][out]; KILN_GEMM_ACC f32 [n][out] added to;
 * KILN_GEMM_SWIGLU bf16 [n][out / 2], column j = silu(product column 2j) * product column 2j + 1. Needs in a
 * multiple of 8, out even (a multiple of 4 for SwiGLU), x and W 16-byte aligned, y 8-byte aligned; tile 0 is
 * AUTO. Asynchronous on `stream` (capturable; a programmatic dependent when the thread asks for it). */
int kiln_cuda_gemm_tc(kiln_gemm_out kind, void *y, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                      int64_t out, kiln_tc_tile tile, int n_sm, cudaStream_t stream);

/* The q/k/v product with what kiln_cuda_qkv_rope (rope.h) does after it folded into its epilogue: a block's 128
 * columns are one head (head_dim 128), so each product row of a head is rounded to bf16 as the unfused product
 * writes it, gets its bias, its q or k RMSNorm (the sum of squares over the 4 lanes that hold the row) and RoPE
 * (element i and i + 64 sit in the same thread), and goes to q_out or the KV cache. The same arithmetic as
 * kiln_cuda_qkv_rope but for the order of the sum of squares. */
typedef struct kiln_tc_qkv {
  uint16_t *q_out, *k_cache, *v_cache;        /* as kiln_cuda_qkv_rope writes them */
  const float *bias, *q_norm, *k_norm, *rope; /* bias and norms may be NULL */
  const kiln_cuda_step *step;                 /* the chunk's slot and first position, read on the device */
  float eps;
  int n_heads, n_kv_heads, n_ctx;
} kiln_tc_qkv;

/* x bf16 [n][in] times W bf16 [(n_heads + 2 n_kv_heads) 128][in], fused as above; tile AUTO or one of 128 columns
 * (others take AUTO's choice among those). */
int kiln_cuda_gemm_tc_qkv(const kiln_tc_qkv *e, const uint16_t *x, const uint16_t *w, int64_t n, int64_t in,
                          kiln_tc_tile tile, int n_sm, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
