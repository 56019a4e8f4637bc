"""What a person looks at after a run: matplotlib figures, the self-contained HTML page, TensorBoard scalars.

Nothing here computes a metric: curves, bins and counts come from `jaxcxr.metrics`, timings from the run's
records; this package only draws and writes them.
"""
