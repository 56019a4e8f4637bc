"""jaxcxr: pneumonia-vs-healthy chest X-ray classification in JAX/Flax, timed on CPU and GPU.

Kept import-free on purpose: worker processes of the preprocessing cache import
`jaxcxr.data.images` and must not pay for (or fork) a JAX runtime.
"""
