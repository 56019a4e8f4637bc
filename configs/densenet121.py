"""DenseNet-121 (torchvision's; CheXNet's network) at 224 px on the embedded synthetic default or --data_dir.

Run (ImageNet weights from a local file written with torchvision: README, "Pretrained weights"):
  python run.py --config=configs/densenet121.py --data_dir=/data/ChestX-ray14 \
      --config.model.init_from=densenet121.safetensors
"""

import ml_collections

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.image_size = 224
  config.model = ml_collections.ConfigDict(dict(
      name="densenet121", dtype="float32",
      block_sizes=(6, 12, 24, 16),  # dense layers per block; fewer give the tests' tiny variant
      growth_rate=32,               # channels each dense layer adds
      init_features=64,             # channels of the stem
      init_from="",                 # '' = random init, or a torchvision .safetensors state_dict
      lowering="auto"))             # the CPU's convolutions (docs/performance.md, "Backbone convolutions")
  return config
