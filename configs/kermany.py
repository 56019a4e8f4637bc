"""Kermany pediatric chest X-rays (chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}), the paper's test set.

The 624 test films are kept as published; train and val (16 films) are merged
and re-split by patient, 15% to validation. Inputs are 180 px like the paper.

Run:
  python run.py --mode=describe --config=configs/kermany.py --data_dir=/data/chest_xray
  python run.py --platform=cpu --config=configs/kermany.py --data_dir=/data/chest_xray --workdir=runs/kermany
"""

from jaxcxr.configs import paper


def get_config():
  config = paper.get_config()
  config.data.dataset = "kermany"
  config.data.positive_class = "PNEUMONIA"
  config.data.aspect = "crop"   # films vary from 384 to 2,916 px and rarely square
  return config
