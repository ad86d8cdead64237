/* config.h (private): config.json / generation_config.json parsing beyond the public kiln_config_parse. */
#ifndef KILN_MODEL_CONFIG_H
#define KILN_MODEL_CONFIG_H

#include <stddef.h>

#include "kiln/model.h"

/* Applies generation_config.json text to a parsed config: eos_token_id (an int or a list) and bos_token_id,
 * when present and not null, replace config.json's. `path` is used in messages only. */
int kiln_genconfig_parse(kiln_config *cfg, const char *json, size_t len, const char *path);

/* Checks the invariants every consumer relies on (positive sizes, GQA divisibility, an even head_dim, sizes whose
 * products fit in 64 bits); used by the parser and by kiln_model_random for configs built by hand. */
int kiln_config_check(const kiln_config *cfg, const char *path);

#endif
