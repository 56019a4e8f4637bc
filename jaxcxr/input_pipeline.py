"""Streaming batches from the preprocessed cache: grain for shuffling, augmentation and batching,
then a small device prefetcher so host-to-device copies overlap the previous step.

The training stream is a `grain.MapDataset`, so batch `b` is a pure function of
(seed, b): epoch `e` is shuffled with seed+e and each image's augmentation is
seeded by its position in the stream. Resuming at a step therefore continues
with exactly the batch an uninterrupted run would have seen next.
"""

import collections
import math
import time
from collections.abc import Callable, Iterator

import grain
import ml_collections
import numpy as np
from PIL import Image

from jaxcxr.data.cache import CachedSplit
from jaxcxr.errors import UserError


class SplitSource:
  """grain random-access source over a cached split: one `{'image', 'label'}` dict per index."""

  def __init__(self, split: CachedSplit):
    self.split = split

  def __len__(self) -> int:
    return len(self.split)

  def __getitem__(self, index: int) -> dict:
    return {"image": np.asarray(self.split.images[index]), "label": self.split.labels[index]}


class Augment(grain.transforms.RandomMap):
  """Small random affine (shift, scale, rotation) plus brightness and contrast; never a flip.

  Laterality matters in chest films (the heart sits on the left), so mirror
  images are not plausible films and horizontal flips are not used.
  """

  def __init__(self, cfg: ml_collections.ConfigDict):
    self.cfg = cfg

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    cfg, img = self.cfg, element["image"]
    size = img.shape[0]
    angle = math.radians(rng.uniform(-cfg.max_rotate_deg, cfg.max_rotate_deg))
    scale = 1.0 + rng.uniform(-cfg.max_scale, cfg.max_scale)
    tx, ty = rng.uniform(-cfg.max_translate, cfg.max_translate, 2) * size
    # PIL maps each output pixel to an input pixel: invert rotate+scale about the centre, then shift.
    c = (size - 1) / 2.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    matrix = (cos, sin, c - cos * (c + tx) - sin * (c + ty),
              -sin, cos, c + sin * (c + tx) - cos * (c + ty))
    out = np.asarray(Image.fromarray(img).transform((size, size), Image.Transform.AFFINE, matrix,
                                                    resample=Image.Resampling.BILINEAR), np.float32)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    brightness = rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
    out = (out - out.mean()) * contrast + out.mean() + brightness
    return {"image": np.clip(out, 0, 255).astype(np.uint8), "label": element["label"]}


class BalancedSource(SplitSource):
  """Each epoch holds every negative once and as many positives, drawn cyclically with repeats.

  For NIH pneumonia (~2% positive) this shows the network as many positive as
  negative films per epoch; the per-epoch shuffle mixes the repeats.
  """

  def __init__(self, split: CachedSplit):
    super().__init__(split)
    positives, negatives = np.flatnonzero(split.labels == 1), np.flatnonzero(split.labels == 0)
    if len(positives) == 0 or len(negatives) == 0:
      raise UserError("train.class_balance=sampling needs both classes in the training split")
    self.index = np.concatenate([negatives, np.resize(positives, len(negatives))])

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, index: int) -> dict:
    return super().__getitem__(int(self.index[index]))


def train_source(split: CachedSplit, class_balance: str) -> SplitSource:
  """The training examples of one epoch: the split as is, or class-balanced by resampling."""
  return BalancedSource(split) if class_balance == "sampling" else SplitSource(split)


def train_dataset(source: SplitSource, batch_size: int, epochs: int, seed: int,
                  augment: ml_collections.ConfigDict) -> grain.MapDataset:
  """The whole training stream, `epochs * (len(source) // batch_size)` batches long, indexable by step.

  Each epoch's last partial batch is dropped (and reshuffled into the next epoch).
  """
  ds = grain.MapDataset.source(source).shuffle(seed=seed)
  if augment.enabled:
    ds = ds.random_map(Augment(augment), seed=seed)
  return ds.batch(batch_size, drop_remainder=True).repeat(epochs)


def train_iterator(ds: grain.MapDataset, num_threads: int, prefetch: int) -> grain.DatasetIterator:
  """Reads and augments in `num_threads` threads, `prefetch` elements ahead of the consumer."""
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))


class DevicePrefetcher:
  """Keeps `depth` batches already sent to the device, and the grain state that follows each.

  `state` is the iterator state after the batch most recently returned, i.e.
  what a checkpoint must record: the batches prefetched but not yet trained
  on are not consumed. `wait_s` accumulates time spent blocked on the host pipeline.
  """

  def __init__(self, iterator: grain.DatasetIterator, put: Callable[[dict], dict], depth: int = 2):
    self.iterator, self.put, self.depth = iterator, put, depth
    self.queue = collections.deque()
    self.state = iterator.get_state()
    self.wait_s = 0.0

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    while len(self.queue) < self.depth:
      start = time.perf_counter()
      try:
        host = next(self.iterator)
      except StopIteration:
        break
      finally:
        self.wait_s += time.perf_counter() - start
      self.queue.append((self.put(host), self.iterator.get_state()))
    if not self.queue:
      raise StopIteration
    batch, self.state = self.queue.popleft()
    return batch


def eval_batches(split: CachedSplit, batch_size: int) -> Iterator[dict]:
  """Fixed-shape batches in file order; the last is zero-padded, with `mask` marking real rows."""
  for start in range(0, len(split), batch_size):
    stop = min(start + batch_size, len(split))
    n = stop - start
    images = np.zeros((batch_size, *split.images.shape[1:]), np.uint8)
    labels = np.zeros((batch_size,), np.int32)
    images[:n], labels[:n] = split.images[start:stop], split.labels[start:stop]
    yield {"image": images, "label": labels, "mask": np.arange(batch_size) < n}
