"""Post-training: SFT and DPO on TRL, and the eval stage (perplexity, generation, code-switch rate)."""
