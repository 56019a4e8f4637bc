"""What a person looks at after a run: matplotlib figures, the self-contained HTML page, its tables and the
summary printed at the end.

Nothing here computes a metric: curves, bins and counts come from `jaxcxr.metrics`, timings from the run's
records; this package only draws and writes them.
"""
