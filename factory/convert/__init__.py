"""Megatron <-> Hugging Face conversion: declarative mapping tables, streamed I/O, logit verification."""
