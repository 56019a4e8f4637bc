"""A seconds-long variant for tests and smoke runs: few synthetic patients, 32 px, 2 epochs.

Run:
  python run.py --platform=cpu --config=jaxcxr/configs/tiny.py --workdir=/tmp/jaxcxr-tiny
"""

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.image_size = 32
  config.data.synthetic.num_patients = 48
  config.data.synthetic.image_size = 96
  config.model.widths = (8, 16)
  config.model.dense = (16,)
  config.train.epochs = 2
  config.train.batch_size = 8
  config.checkpoint.every_steps = 5
  return config
