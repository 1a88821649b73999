"""Synthetic data from an OpenAI-compatible chat endpoint: persona x seed document prompts, preference pairs."""
