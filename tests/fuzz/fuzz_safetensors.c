/* libFuzzer: the safetensors header parser on arbitrary bytes (the input is the whole file). Every accepted tensor
 * must lie inside the input (ASan checks the first and last byte of each range) and be found by name. */
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_st_file f;
  if (kiln_st_parse(&f, data, size, "fuzz.safetensors") != 0) return 0;
  for (size_t i = 0; i < f.n_tensors; i++) {
    const kiln_st_tensor *t = &f.tensors[i];
    if (kiln_st_find(&f, t->name) != t) __builtin_trap();
    if (t->end > t->begin) {
      const uint8_t *p = kiln_st_data(&f, t);
      volatile uint8_t x = (uint8_t)(p[0] ^ p[t->end - t->begin - 1]);
      (void)x;
    }
    if (t->end - t->begin != 0 && kiln_st_dtype_size(t->dtype) == 0) __builtin_trap();
  }
  kiln_st_close(&f);
  return 0;
}
