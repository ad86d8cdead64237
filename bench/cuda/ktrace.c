/* ktrace: every kernel's GPU start, duration and name, graph nodes included, as CSV: a CUPTI injection library
 * for machines without Nsight Systems.
 *
 *   CUDA_INJECTION64_PATH=build-cuda/lib/libkiln_ktrace.so KTRACE_OUT=trace.csv build-cuda/bin/bench_cuda ...
 *
 * The driver loads the library named by CUDA_INJECTION64_PATH when the process first initialises CUDA and calls
 * InitializeInjection. Kernel activity records come from CUPTI in buffers it hands back when full and at the
 * final flush (at exit); each kernel launched by a CUDA graph gets its own record. The CSV has the columns of
 * `nsys stats --report cuda_gpu_trace` that bench/cuda/trace_report.py reads. A failure is reported on stderr
 * once and tracing stops; the traced program runs on untouched. */
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KT_BUF_BYTES ((size_t)8 << 20)
#define KT_ALIGN 8

static FILE *kt_out;
static unsigned long long kt_kernels, kt_dropped;

static void kt_fail(const char *what, CUptiResult r) {
  const char *s = "?";
  cuptiGetResultString(r, &s);
  fprintf(stderr, "ktrace: %s: %s\n", what, s);
}

static void CUPTIAPI kt_buffer_requested(uint8_t **buf, size_t *size, size_t *max_records) {
  *buf = aligned_alloc(KT_ALIGN, KT_BUF_BYTES); /* CUPTI wants 8-byte aligned buffers */
  *size = *buf ? KT_BUF_BYTES : 0;
  *max_records = 0; /* as many as fit */
}

/* The name quoted as a CSV field: a mangled template name may hold commas once demangled by a reader. */
static void kt_write_name(const char *name) {
  fputc('"', kt_out);
  for (const char *c = name ? name : "?"; *c; c++) {
    if (*c == '"') fputc('"', kt_out);
    fputc(*c, kt_out);
  }
  fputc('"', kt_out);
}

static void CUPTIAPI kt_buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid) {
  (void)ctx;
  (void)size;
  CUpti_Activity *rec = NULL;
  while (kt_out && cuptiActivityGetNextRecord(buf, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)rec;
    fprintf(kt_out, "%llu,%llu,%u,%u,", (unsigned long long)k->start, (unsigned long long)(k->end - k->start),
            k->graphId, k->graphNodeId ? 1u : 0u);
    kt_write_name(k->name);
    fputc('\n', kt_out);
    kt_kernels++;
  }
  size_t dropped = 0;
  if (cuptiActivityGetNumDroppedRecords(NULL, stream, &dropped) == CUPTI_SUCCESS) kt_dropped += dropped;
  free(buf);
}

static void kt_finish(void) {
  cuptiActivityFlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
  if (!kt_out) return;
  fclose(kt_out);
  kt_out = NULL;
  fprintf(stderr, "ktrace: %llu kernels, %llu records dropped\n", kt_kernels, kt_dropped);
}

int InitializeInjection(void);
int InitializeInjection(void) {
  const char *path = getenv("KTRACE_OUT");
  if (!path || !*path) {
    fprintf(stderr, "ktrace: KTRACE_OUT is not set; not tracing\n");
    return 1;
  }
  kt_out = fopen(path, "w");
  if (!kt_out) {
    fprintf(stderr, "ktrace: cannot open %s\n", path);
    return 1;
  }
  fprintf(kt_out, "Start (ns),Duration (ns),Graph id,In a graph,Name\n");
  CUptiResult r = cuptiActivityRegisterCallbacks(kt_buffer_requested, kt_buffer_completed);
  if (r == CUPTI_SUCCESS) r = cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
  if (r != CUPTI_SUCCESS) {
    kt_fail("enabling kernel activity", r);
    fclose(kt_out);
    kt_out = NULL;
    return 1;
  }
  atexit(kt_finish);
  return 1;
}
