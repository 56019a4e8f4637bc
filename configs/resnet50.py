"""ResNet-50 (torchvision's, with BatchNorm): the ResNet-18 config with bottleneck blocks, 3-4-6-3 per stage.

Run (ImageNet weights from a local file written with torchvision: README, "Pretrained weights"):
  python run.py --config=configs/resnet50.py --data_dir=/data/ChestX-ray14 \
      --config.model.init_from=resnet50.safetensors
"""

from jaxcxr.configs import resnet18


def get_config():
  config = resnet18.get_config()
  config.model.name = "resnet50"
  config.model.stage_sizes = (3, 4, 6, 3)
  return config
