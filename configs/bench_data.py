"""What the input-pipeline benchmark preprocesses, loads and trains by default: 224 px films in batches of 32,
the default CNN for one epoch.

Run:
  python -m jaxcxr.perf.data_bench
  python run.py --config=configs/bench_data.py --data_dir=/data/ChestX-ray14   # one such training run
"""

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.image_size = 224
  config.train.batch_size = 32
  config.train.epochs = 1
  return config
