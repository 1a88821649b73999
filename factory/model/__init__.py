"""Model presets -> megatron.core GPTModel (Llama-style dense and MoE)."""
