/*
 * engine/engine_impl.h (internal): what the generation loop and the tools need from the engine beyond the public
 * kiln/engine.h.
 */
#ifndef KILN_ENGINE_IMPL_H
#define KILN_ENGINE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/sampler.h"

/* One decode step with sampling inside the backend (backend->decode_sample): appends `token` to `seq` and writes
 * the sampled next token. KILN_EUNSUPPORTED (no message) when the backend has no such entry. */
int kiln__engine_decode_sample(kiln_engine *e, int seq, int32_t token, const kiln_sampling *s, uint64_t step,
                               int32_t *next);
bool kiln__engine_has_decode_sample(const kiln_engine *e);
/* The backend's description ("cpu (2 threads, avx2)", "cuda:0 NVIDIA H200"). */
const char *kiln__engine_describe(const kiln_engine *e);
/* Bytes a decode step at position `pos` reads (weights as the backend stores them, one embedding row, the KV
 * cache rows 0 .. pos): the numerator of the decode floor. */
int64_t kiln__engine_step_bytes(const kiln_engine *e, int pos);
/* The copy bandwidth (bytes read + written per second) of the backend's device memory, measured now;
 * KILN_EUNSUPPORTED (no message) for a backend that computes in host memory. */
int kiln__engine_copy_bandwidth(kiln_engine *e, double *bytes_per_s);

#endif /* KILN_ENGINE_IMPL_H */
