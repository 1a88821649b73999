"""`python -m factory.doctor`: a fixed list of checks that proves a node can run the factory (see docs/gpu.md)."""
