/*
 * backend/cuda/rmsnorm.cu: x += r; y = bf16(rmsnorm(x) * w). One block per row; the row is read once for the
 * add and the sum of squares, and once more (from L1/L2) for the scaled output.
 */
#include "backend/cuda/cuda_common.h"
#include "backend/cuda/rmsnorm.h"

#define RMS_THREADS 256

static __global__ void __launch_bounds__(RMS_THREADS)
    add_rmsnorm_kernel(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t dim,
                       float eps) {
  __shared__ float red[RMS_THREADS / 32];
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

static int add_rmsnorm_launch(uint16_t *y, float *x, const float *r, const float *rb, const float *w, int64_t n,
                              int64_t dim, float eps, cudaStream_t stream) {
  add_rmsnorm_kernel<<<(unsigned)n, RMS_THREADS, 0, stream>>>(y, x, r, rb, w, dim, eps);
  KILN_CUDA_LAUNCHED();
  return 0;
}

extern "C" int kiln_cuda_add_rmsnorm(uint16_t *y, float *x, const float *r, const float *rb, const float *w,
                                     int64_t n, int64_t dim, float eps, cudaStream_t stream) {
  if (n < 0 || n > 0x7fffffff || dim <= 0)
    return kiln_error(KILN_EINVAL, "cuda add_rmsnorm: bad size (n %lld, dim %lld)", (long long)n, (long long)dim);
  if (n == 0) return 0;
  return add_rmsnorm_launch(y, x, r, rb, w, n, dim, eps, stream);
}
