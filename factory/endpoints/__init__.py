"""OpenAI-compatible chat endpoints: the retrying client and the loopback server on a local HF folder."""
