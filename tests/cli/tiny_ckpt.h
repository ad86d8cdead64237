/*
 * tiny_ckpt.h: writes a small but complete Hugging Face checkpoint directory (config.json, model.safetensors in
 * f32, tokenizer.json with a byte-level BPE), so the CLI tests can drive `kiln` end to end without shipped data
 * and can damage copies of it for the bad-input cases.
 *
 * Qwen3: 2 layers, hidden 64, 4 query heads and 2 KV heads of head_dim 32 (not hidden/heads), q/k norms, tied
 * embeddings, transformers 4 config form. Llama: untied head, llama3 rope scaling in the transformers 5 form
 * (rope_parameters), and a tokenizer whose post-processor puts <|begin_of_text|> first, as Llama 3's does.
 * Both have max_position_embeddings = 128. Weights are deterministic (fixed seed).
 */
#ifndef KILN_TEST_TINY_CKPT_H
#define KILN_TEST_TINY_CKPT_H

#include <stdint.h>

typedef enum tiny_arch { TINY_QWEN3 = 0, TINY_LLAMA = 1 } tiny_arch;

#define TINY_MAX_POS 128

typedef struct tiny_info {
  int n_vocab;     /* tokenizer ids = config vocab_size */
  int32_t eos_id;  /* <|endoftext|> */
  int32_t bos_id;  /* <|begin_of_text|> (Llama), -1 for Qwen3 */
} tiny_info;

/* Creates `dir` (which must not exist) and writes the checkpoint into it. Returns 0, or -1 with a message on
 * stderr. `info` may be NULL. */
int tiny_ckpt_write(const char *dir, tiny_arch arch, tiny_info *info);

#endif /* KILN_TEST_TINY_CKPT_H */
