"""Measurement, apart from training: the step and input-pipeline benchmarks, the CPU-vs-GPU speedup command,
FLOP counting and the charts. It reaches training only through training's public functions; nothing in
training imports it.

  python -m jaxcxr.perf.bench        # the train step against the matmul peak (and PyTorch, --torch)
  python -m jaxcxr.perf.data_bench   # preprocessing, loading, data wait and memory
  python -m jaxcxr.perf.speedup      # the paper's CPU-vs-GPU comparison, Tables 3-5 and Figures 5-8
"""
