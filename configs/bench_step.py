"""What the step benchmark times by default: the paper's CNN at the field's 224 px, batch 32, Adam.

Run:
  python -m jaxcxr.perf.bench --torch
  python -m jaxcxr.perf.bench --config.model.dtype=bfloat16 --platform=gpu
  python run.py --config=configs/bench_step.py       # training with the same settings
"""

from jaxcxr.configs import paper


def get_config():
  config = paper.get_config()
  config.data.image_size = 224
  config.train.batch_size = 32
  return config
