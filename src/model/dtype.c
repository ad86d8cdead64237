/* Element types and tensor views (see kiln/model.h). */
#include "kiln/model.h"

size_t kiln_dtype_size(kiln_dtype dt) {
  switch (dt) {
  case KILN_F32: return 4;
  case KILN_F16: return 2;
  case KILN_BF16: return 2;
  }
  return 0;
}

const char *kiln_dtype_name(kiln_dtype dt) {
  switch (dt) {
  case KILN_F32: return "F32";
  case KILN_F16: return "F16";
  case KILN_BF16: return "BF16";
  }
  return "?";
}

int64_t kiln_tensor_numel(const kiln_tensor *t) {
  if (!t || t->ndim < 0 || t->ndim > 4) return 0;
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}
