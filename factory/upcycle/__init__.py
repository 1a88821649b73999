"""Sparse upcycling: a dense checkpoint -> a Mixture-of-Experts checkpoint equal to it at step 0."""
