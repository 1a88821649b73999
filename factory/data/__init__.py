"""Corpus preparation: ingest, filters, dedup, synthetic data, packing, blends."""
