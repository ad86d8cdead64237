/*
 * backend/cuda/rmsnorm.cu: x += r; y = bf16(rmsnorm(x) * w). One block per row. Rows of a multiple of 4 elements
 * (every model's hidden size) take the vector form, whose 16-byte loads are all issued at once and whose row stays
 * in registers; others the scalar form, which reads the row once for the add and the sum of squares and once more
 * (from L1/L2) for the scaled output.
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rmsnorm.h"

#define RMS_THREADS 256

static __global__ void __launch_bounds__(RMS_THREADS)
    add_rmsnorm_kernel(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t dim,
                       float eps) {
  __shared__ float red[RMS_THREADS / 32];
  kiln_pdl_trigger();
  kiln_pdl_wait();
  int64_t row = blockIdx.x;
  float *xr = x + row * dim;
  const float *rr = r ? r + row * dim : NULL;
  float ss = 0.f;
  for (int64_t i = threadIdx.x; i < dim; i += RMS_THREADS) {
    float v = xr[i];
    if (rr || rb) {
      v += (rr ? rr[i] : 0.f) + (rb ? rb[i] : 0.f);
      xr[i] = v;
    }
    ss = fmaf(v, v, ss);
  }
  ss = kiln_warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < RMS_THREADS / 32 ? red[threadIdx.x] : 0.f;
    v = kiln_warp_sum(v);
    if (threadIdx.x == 0) red[0] = v;
  }
  __syncthreads();
  float inv = rsqrtf(red[0] / (float)dim + eps);
  uint16_t *yr = y + row * dim;
  /* Each thread reads back only the elements it wrote itself above, so no barrier is needed for x. */
  for (int64_t i = threadIdx.x; i < dim; i += RMS_THREADS) yr[i] = kiln_f32_to_bf16_dev(w[i] * (xr[i] * inv));
}

/* The vector form, for rows of a multiple of 4 elements and at most 4 * NV * RMS_THREADS: a thread's elements
 * (4 consecutive ones, every 4 * RMS_THREADS) are loaded with 16-byte loads, all at once, and stay in registers
 * for the output, so the row is read once and each thread's loads are in flight together. */
template <int NV>
static __global__ void __launch_bounds__(RMS_THREADS)
    add_rmsnorm_vec_kernel(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int dim,
                           float eps) {
  __shared__ float red[RMS_THREADS / 32];
  kiln_pdl_trigger();
  kiln_pdl_wait();
  const int64_t row = blockIdx.x;
  const int n4 = dim / 4;
  float4 *xr = (float4 *)(x + row * dim);
  const float4 *rr = r ? (const float4 *)(r + row * dim) : NULL, *rb4 = (const float4 *)rb;
  float4 v[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = threadIdx.x + k * RMS_THREADS;
    v[k] = i < n4 ? xr[i] : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = threadIdx.x + k * RMS_THREADS;
    if (i >= n4) continue;
    if (rr || rb4) {
      const float4 z = make_float4(0.f, 0.f, 0.f, 0.f), a = rr ? rr[i] : z, b = rb4 ? rb4[i] : z;
      v[k] = make_float4(v[k].x + (a.x + b.x), v[k].y + (a.y + b.y), v[k].z + (a.z + b.z), v[k].w + (a.w + b.w));
      xr[i] = v[k];
    }
    ss = fmaf(v[k].x, v[k].x, fmaf(v[k].y, v[k].y, fmaf(v[k].z, v[k].z, fmaf(v[k].w, v[k].w, ss))));
  }
  ss = kiln_warp_sum(ss);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  float tot = 0.f;
#pragma unroll
  for (int k = 0; k < RMS_THREADS / 32; k++) tot += red[k]; /* every thread, the same order: no second barrier */
  const float inv = rsqrtf(tot / (float)dim + eps);
  uint2 *yr = (uint2 *)(y + row * dim);
  const float4 *w4 = (const float4 *)w;
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int i = threadIdx.x + k * RMS_THREADS;
    if (i >= n4) continue;
    const float4 g = w4[i];
    yr[i] = kiln_pack_bf16x4(
        make_float4(g.x * (v[k].x * inv), g.y * (v[k].y * inv), g.z * (v[k].z * inv), g.w * (v[k].w * inv)));
  }
}

static int add_rmsnorm_launch(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t n,
                              int64_t dim, float eps, cudaStream_t stream) {
  const uintptr_t a16 = (uintptr_t)x | (uintptr_t)w | (uintptr_t)(r ? r : x) | (uintptr_t)(rb ? rb : w);
  const bool vec = dim % 4 == 0 && a16 % 16 == 0 && (uintptr_t)y % 8 == 0;
  const int64_t nv = (dim / 4 + RMS_THREADS - 1) / RMS_THREADS;
  const dim3 grid((unsigned)n), block(RMS_THREADS);
  if (vec && nv <= 1)
    KILN_CUDA_CHECK(kiln_launch(add_rmsnorm_vec_kernel<1>, grid, block, 0, stream, y, x, r, rb, w, (int)dim, eps));
  else if (vec && nv <= 2)
    KILN_CUDA_CHECK(kiln_launch(add_rmsnorm_vec_kernel<2>, grid, block, 0, stream, y, x, r, rb, w, (int)dim, eps));
  else if (vec && nv <= 4)
    KILN_CUDA_CHECK(kiln_launch(add_rmsnorm_vec_kernel<4>, grid, block, 0, stream, y, x, r, rb, w, (int)dim, eps));
  else if (vec && nv <= 8)
    KILN_CUDA_CHECK(kiln_launch(add_rmsnorm_vec_kernel<8>, grid, block, 0, stream, y, x, r, rb, w, (int)dim, eps));
  else
    KILN_CUDA_CHECK(kiln_launch(add_rmsnorm_kernel, grid, block, 0, stream, y, x, r, rb, w, dim, eps));
  return 0;
}

extern "C" int kiln_cuda_add_rmsnorm(uint16_t *y, float *x, const float *r, const float *rb, const float *w,
                                     int64_t n, int64_t dim, float eps, cudaStream_t stream) {
  if (n < 0 || n > 0x7fffffff || dim <= 0)
    return kiln_error(KILN_EINVAL, "cuda add_rmsnorm: bad size (n %lld, dim %lld)", (long long)n, (long long)dim);
  if (n == 0) return 0;
  return add_rmsnorm_launch(y, x, r, rb, w, n, dim, eps, stream);
}
