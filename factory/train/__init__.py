"""Training engine: pretrain and CPT on megatron.core."""
