"""A seconds-long variant for tests and smoke runs: few synthetic patients, 32 px, 2 epochs; the paper CNN,
or a tiny variant of a backbone (fewer and narrower stages).

Run:
  python run.py --platform=cpu --config=configs/tiny.py --workdir=/tmp/jaxcxr-tiny
  python run.py --platform=cpu --config=configs/tiny.py:densenet121 --workdir=/tmp/jaxcxr-tiny-densenet
"""

from jaxcxr.configs import default, densenet121, resnet18, resnet50

# Each backbone's own config, with stages cut down so a step takes milliseconds.
_BACKBONES = {"resnet18": (resnet18, dict(stage_sizes=(1, 1), width=8)),
              "resnet50": (resnet50, dict(stage_sizes=(1, 1), width=4)),
              "densenet121": (densenet121, dict(block_sizes=(2, 2), growth_rate=8, init_features=16))}


def get_config(network: str = "paper_cnn"):
  config = default.get_config()
  config.data.image_size = 32
  config.data.synthetic.num_patients = 48
  config.data.synthetic.image_size = 96
  if network == "paper_cnn":
    config.model.widths = (8, 16)
    config.model.dense = (16,)
  else:
    module, tiny = _BACKBONES[network]
    config.model = module.get_config().model
    config.model.update(tiny)
  config.train.epochs = 2
  config.train.batch_size = 8
  config.checkpoint.every_steps = 5
  return config
