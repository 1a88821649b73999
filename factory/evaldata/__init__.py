"""Public Japanese benchmark data for the eval stage (JGLUE v1.3, Japanese MT-Bench): fetched from upstream at
pinned commits, checked against pinned checksums and cached per user; `python -m factory.evaldata`."""
