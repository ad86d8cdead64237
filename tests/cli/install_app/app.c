/* A program built against the installed kiln package: it must compile with only the installed headers, link with
 * only what the package declares, and run. It exercises the error table and a library routine that pulls in a
 * dependency (config.json parsing, through jansson). */
#include <stdio.h>
#include <string.h>

#include <kiln/kiln.h>

int main(void) {
  if (strcmp(kiln_strerror(KILN_ENOMEM), "out of memory") != 0) return 1;
  const char *json = "{\"model_type\": \"qwen3\", \"vocab_size\": 300, \"hidden_size\": 64, \"intermediate_size\": 96,"
                     " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
                     " \"head_dim\": 32, \"max_position_embeddings\": 128, \"rms_norm_eps\": 1e-6,"
                     " \"rope_theta\": 1000000.0, \"tie_word_embeddings\": true, \"eos_token_id\": 299}";
  kiln_config cfg;
  int rc = kiln_config_parse(&cfg, json, strlen(json), "config.json");
  if (rc != 0) {
    fprintf(stderr, "app: %s\n", kiln_last_error());
    return 1;
  }
  if (cfg.arch != KILN_ARCH_QWEN3 || cfg.hidden_size != 64 || cfg.head_dim != 32) return 1;
  rc = kiln_config_parse(&cfg, "{", 1, "bad.json");
  if (rc >= 0 || !strstr(kiln_last_error(), "bad.json")) return 1;
  printf("kiln app ok\n");
  return 0;
}
