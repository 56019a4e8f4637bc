"""Reading chest X-ray datasets from disk and turning them into preprocessed arrays.

Nothing in this subpackage imports JAX, so it can run in worker processes.
"""
