"""The paper's setup (Mochurad et al., 2021): their CNN, Adam, 10 epochs, 180x180 inputs, batch 16.

The paper reports 263 steps per epoch; that matches ~4,200 training images at
batch 16 with 180x180 inputs, the settings of the Keras "pneumonia
classification" example it appears to follow. The CNN here keeps that
example's shape (two 3x3 convs per block, widths 16-256, a 512-128-64 dense
head with dropout, one sigmoid logit) with plain convolutions and no batch norm.

Run (synthetic default, or point --data_dir at NIH):
  python run.py --platform=cpu --config=configs/paper.py --workdir=runs/paper-cpu
  python run.py --platform=gpu --config=configs/paper.py --workdir=runs/paper-gpu
"""

from jaxcxr.configs import default


def get_config():
  config = default.get_config()
  config.data.image_size = 180
  config.model.widths = (16, 32, 64, 128, 256)
  config.model.convs_per_block = 2
  config.model.dense = (512, 128, 64)
  config.model.dropout = 0.5
  config.train.epochs = 10
  config.train.batch_size = 16
  config.train.optimizer = "adam"
  config.train.learning_rate = 1e-3
  return config
