"""The only package that knows CPU from CUDA: distributed init, parallel_state, seeds, device."""
