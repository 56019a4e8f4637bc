"""Train and evaluate a chest X-ray classifier: `python run.py --platform=cpu|gpu` (flags: jaxcxr/main.py).

  python run.py --platform=cpu                                   # embedded synthetic default
  python run.py --config=configs/paper.py --workdir=runs/paper
  python run.py --mode=describe --data_dir=/data/ChestX-ray14
"""

from jaxcxr import main

if __name__ == "__main__":
  main.run()
