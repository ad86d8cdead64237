/* libFuzzer: config.json (and generation_config.json on top of it) on arbitrary bytes. An accepted config must
 * satisfy the invariants the engine relies on. */
#include <stddef.h>
#include <stdint.h>

#include "kiln/model.h"
#include "model/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_config c;
  if (kiln_config_parse(&c, (const char *)data, size, "fuzz/config.json") != 0) return 0;
  if (kiln_config_check(&c, "fuzz") != 0 || c.head_dim <= 0 || c.n_heads % c.n_kv_heads != 0) __builtin_trap();
  if (c.rope_type == KILN_ROPE_LLAMA3 && !(c.rope_high_freq_factor > c.rope_low_freq_factor)) __builtin_trap();
  /* The same bytes as a generation_config.json. */
  if (kiln_genconfig_parse(&c, (const char *)data, size, "fuzz/generation_config.json") == 0 &&
      (c.n_eos < 0 || c.n_eos > KILN_MAX_EOS))
    __builtin_trap();
  return 0;
}
