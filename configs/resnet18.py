"""ResNet-18 (torchvision's, with BatchNorm) at 224 px on the embedded synthetic default or --data_dir.

Run (ImageNet weights from a local file written with torchvision: README, "Pretrained weights"):
  python run.py --config=configs/resnet18.py --data_dir=/data/ChestX-ray14 \
      --config.model.init_from=resnet18.safetensors
"""

import ml_collections

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.image_size = 224
  config.model = ml_collections.ConfigDict(dict(
      name="resnet18", dtype="float32",
      stage_sizes=(2, 2, 2, 2),  # blocks per stage; fewer (and a smaller width) give the tests' tiny variant
      width=64,                  # channels of the first stage, doubled at each later one
      init_from="",              # '' = random init, or a torchvision .safetensors state_dict
      lowering="auto"))          # the CPU's convolutions (docs/performance.md, "Backbone convolutions")
  return config
