"""Hugging Face folder files the stages share: the tokenizer files a model folder carries."""
