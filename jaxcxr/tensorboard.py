"""Training curves while a run trains (`logging.tensorboard=true`): per-epoch scalars in `RUN/tensorboard/`, for
`tensorboard --logdir runs/`. Written through tensorboardX, which needs no TensorFlow; an optional dependency
(`pip install 'jaxcxr[tensorboard]'`), checked when the config is validated."""

import importlib.util
import pathlib

PACKAGE = "tensorboardX"
# An epoch record's keys (`train._end_epoch`), by the tag each is shown under.
SCALARS = {"train/loss": "train_loss", "train/accuracy": "train_accuracy", "val/loss": "val_loss",
           "val/accuracy": "val_accuracy", "val/auroc": "val_auc", "time/ms_per_step": "ms_per_step",
           "time/data_wait_fraction": "data_wait_fraction", "time/sec_per_epoch": "sec_per_epoch"}


def available() -> bool:
  return importlib.util.find_spec(PACKAGE) is not None


class Scalars:
  """One event-file writer for the run; a resumed run first drops what its killed predecessor wrote past the
  checkpoint it resumes from, so every curve has one value per step."""

  def __init__(self, folder: pathlib.Path, resumed_step: int):
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top  # optional
    self.writer = SummaryWriter(logdir=str(folder), purge_step=resumed_step or None)

  def epoch(self, record: dict, learning_rate: float) -> None:
    step = record["step"]
    for tag, key in SCALARS.items():
      if record.get(key) is not None:
        self.writer.add_scalar(tag, record[key], step)
    self.writer.add_scalar("optimizer/learning_rate", learning_rate, step)
    self.writer.flush()

  def close(self) -> None:
    self.writer.close()
