"""CheXNet (Rajpurkar et al. 2017): DenseNet-121 at 224 px on NIH's 14 findings at once, one logit each.

As the paper trained it: Adam (beta 0.9/0.999) at learning rate 1e-3, batch 16, the learning rate cut x0.1
each time the validation loss stops improving; each finding's positives weighted by their training
frequency. Start from ImageNet weights written with torchvision (README, "Pretrained weights"); the test split
is reported as the paper's Table 2 (AUROC per finding, with patient-bootstrap intervals) and the mean.

Run:
  python run.py --mode=describe --config=configs/chexnet.py --data_dir=/data/ChestX-ray14
  python run.py --platform=gpu --config=configs/chexnet.py --data_dir=/data/ChestX-ray14 \
      --config.model.init_from=densenet121.safetensors --workdir=runs/chexnet
"""

from jaxcxr.configs import densenet121


def get_config():
  config = densenet121.get_config()
  config.data.dataset = "nih"
  config.data.target = "all"
  config.train.epochs = 12
  config.train.batch_size = 16
  config.train.eval_batch_size = 128
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  config.train.schedule = "plateau"
  config.train.plateau_patience = 1
  config.train.plateau_factor = 0.1
  config.train.class_balance = "pos_weight"
  config.checkpoint.every_steps = 1000
  return config
