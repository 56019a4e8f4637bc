"""PneumoniaMNIST (MedMNIST v2/+): the Kermany films preprocessed to 28-224 px in one .npz.

Published splits 4,708 / 524 / 624. `--data_dir` is the .npz file (or a folder
holding exactly one). Inputs stay at 28 px; set data.image_size to 64/128/224
with the matching MedMNIST+ file.

Run:
  python run.py --platform=cpu --config=configs/pneumoniamnist.py --data_dir=/data/pneumoniamnist.npz \
      --workdir=runs/pneumoniamnist
"""

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.dataset = "medmnist"
  config.data.image_size = 28
  config.data.augment.max_rotate_deg = 0.0
  config.model.widths = (32, 64)
  config.model.convs_per_block = 2
  config.model.dense = (128,)
  config.train.epochs = 20
  config.train.batch_size = 64
  return config
