"""NIH ChestX-ray14, Pneumonia vs No Finding, official test split, DenseNet-121 at 224 px.

Validation is carved from train_val by patient (15%). Pneumonia is ~1.7% of
the training films (876 of ~51k Pneumonia+No Finding), so the classes are
balanced by resampling the stream and AUC is the headline metric; the test
split is 555 Pneumonia vs 9,861 No Finding (5.3% positive). The network is
CheXNet's (its published pneumonia AUROC is 0.768); start it from ImageNet
weights (README, "Pretrained weights"). The paper's CNN remains
`configs/paper.py`.

Run:
  python run.py --mode=describe --config=configs/nih_pneumonia.py --data_dir=/data/ChestX-ray14
  python run.py --platform=gpu --config=configs/nih_pneumonia.py --data_dir=/data/ChestX-ray14 \
      --config.model.init_from=densenet121.safetensors --workdir=runs/nih-gpu
"""

from jaxcxr.configs import densenet121


def get_config():
  config = densenet121.get_config()
  config.data.dataset = "nih"
  config.data.target = "Pneumonia"
  config.data.negatives = "no_finding"
  config.train.epochs = 10
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  config.train.class_balance = "sampling"
  config.train.optimizer = "adamw"
  config.train.learning_rate = 3e-4
  config.train.schedule = "warmup_cosine"
  config.train.warmup_steps = 500
  config.checkpoint.every_steps = 1000
  return config
