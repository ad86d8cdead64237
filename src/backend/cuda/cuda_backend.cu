/*
 * backend/cuda/cuda_backend.cu: the CUDA backend's entry points (the kiln_backend_vtbl the engine calls).
 *
 * kiln_cuda_device_count() answers 0 when there is no driver or no GPU, so the engine can pick "cpu" by default
 * on such machines without an error being recorded.
 */
#include <cuda_runtime.h>

extern "C" {
#include "backend/backend.h"
#include "kiln/status.h"
}

extern "C" int kiln_cuda_device_count(void) {
  int n = 0;
  /* Without a driver this returns cudaErrorNoDevice / cudaErrorInsufficientDriver: both mean "none". */
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
    return 0;
  }
  return n;
}

static int cuda_create_(kiln_backend **out, const kiln_model *m, const kiln_engine_opts *opts, int device_index) {
  (void)m;
  (void)opts;
  *out = NULL;
  return kiln_error(KILN_EUNSUPPORTED, "cuda:%d: CUDA backend not built yet", device_index);
}

static void cuda_destroy_(kiln_backend *b) { (void)b; }

static int cuda_forward_(kiln_backend *b, int seq, int pos, const int32_t *tokens, int n, float *logits,
                         bool all_logits) {
  return kiln_error(KILN_EUNSUPPORTED, "cuda: forward not built yet");
}

static const char *cuda_describe_(kiln_backend *b) { return "cuda"; }

extern "C" const kiln_backend_vtbl kiln_backend_cuda = {
    "cuda", cuda_create_, cuda_destroy_, cuda_forward_, NULL, cuda_describe_,
};
