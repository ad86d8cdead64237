/* Small configs shared by the model tests: a Qwen3 in the transformers 4 form and a Llama in the 5 form. */
#ifndef KILN_TESTS_MODEL_CONFIGS_H
#define KILN_TESTS_MODEL_CONFIGS_H

/* head_dim 16 != hidden/heads (8); GQA 4:2; untied; rope_theta written as an integer, as Qwen's files do. */
#define QWEN3_TINY_V4                                                                                              \
  "{\"architectures\":[\"Qwen3ForCausalLM\"],\"model_type\":\"qwen3\",\"vocab_size\":64,\"hidden_size\":32,"        \
  "\"intermediate_size\":48,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":2,"           \
  "\"head_dim\":16,\"max_position_embeddings\":128,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000,"                 \
  "\"rope_scaling\":null,\"tie_word_embeddings\":false,\"torch_dtype\":\"float32\",\"attention_bias\":false,"       \
  "\"hidden_act\":\"silu\",\"use_sliding_window\":false,\"sliding_window\":null,\"max_window_layers\":2,"           \
  "\"bos_token_id\":1,\"eos_token_id\":2}"

/* No head_dim (derived: 48/6 = 8); tied; q/k/v biases; llama3 rope in rope_parameters; eos as a list. */
#define LLAMA_TINY_V5                                                                                              \
  "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":80,\"hidden_size\":48,"       \
  "\"intermediate_size\":64,\"num_hidden_layers\":2,\"num_attention_heads\":6,\"num_key_value_heads\":2,"           \
  "\"max_position_embeddings\":256,\"rms_norm_eps\":1e-05,\"rope_parameters\":{\"rope_type\":\"llama3\","          \
  "\"rope_theta\":500000.0,\"factor\":32.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"                       \
  "\"original_max_position_embeddings\":8192},\"tie_word_embeddings\":true,\"attention_bias\":true,"                \
  "\"mlp_bias\":false,\"dtype\":\"bfloat16\",\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009]}"

#endif
