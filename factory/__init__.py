"""Japanese-first LLM model factory on Megatron-Core."""
