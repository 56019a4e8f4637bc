"""Default: the embedded synthetic NIH-format dataset at 64 px, sized to train in well under 3 minutes on 2 CPU cores.

Run:
  python run.py --platform=cpu
  python run.py --platform=cpu --config=configs/default.py --config.train.epochs=3 --workdir=runs/short
Real NIH data with these settings:
  python run.py --platform=cpu --data_dir=/data/ChestX-ray14
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.data = data = ml_collections.ConfigDict()
  data.dataset = "nih"             # nih | kermany (class-per-folder trees) | medmnist (.npz) | chexpert | mimic
  data.image_size = 64
  data.aspect = "pad"              # pad | crop: how non-square films become square
  data.target = "Pneumonia"        # a finding ('Pneumonia'), 'any', or 'all' (every finding the dataset labels,
                                   # one logit each); chexpert/mimic name findings as jaxcxr/data/findings.py
  data.negatives = "no_finding"    # no_finding (the paper's "healthy") | rest (every non-target film)
  data.positive_class = "PNEUMONIA"  # kermany: the class folder that is positive; all others negative
  data.views = ""                  # '' = all, or e.g. 'PA' or 'PA,AP'; chexpert/mimic: frontal, lateral, AP, PA
  data.uncertain = "ignore"        # chexpert/mimic uncertain labels: ignore (masked) | zeros | ones
  data.val_fraction = 0.15         # of train_val patients, when official split lists exist
  data.test_fraction = 0.2         # of patients, only when there are no official split lists
  data.split_seed = 0
  data.on_bad_image = "error"      # error (stop, list them all) | skip (drop and count)
  data.cache_dir = ""              # '' = <workdir>/cache
  data.workers = 0                 # decoding processes for the cache build; 0 = all cores
  data.num_threads = 2             # grain read/augment threads
  data.worker_processes = 0        # >0: read/augment in that many processes (many-core GPU hosts)
  data.prefetch = 4                # batches grain reads ahead
  # Geometry (shift, scale, rotation) on the host in the input pipeline; brightness and contrast on
  # the device inside the train step (see jaxcxr/augment.py). No flips: laterality matters.
  data.augment = ml_collections.ConfigDict(dict(
      enabled=True, max_translate=0.04, max_scale=0.05, max_rotate_deg=5.0, brightness=0.05,
      contrast=0.1, interpolation="nearest"))  # interpolation: nearest | bilinear (dearer)
  # The embedded default (used when --data_dir is absent): see jaxcxr/data/synthetic.py.
  data.synthetic = ml_collections.ConfigDict(dict(
      num_patients=240, max_images_per_patient=4, image_size=256, pneumonia_fraction=0.4,
      other_finding_fraction=0.08, test_fraction=0.25, seed=0))

  config.model = model = ml_collections.ConfigDict()
  model.name = "paper_cnn"
  model.widths = (16, 32, 64, 128)
  model.convs_per_block = 1
  model.dense = (64,)
  model.dropout = 0.3
  model.dtype = "float32"          # float32 | bfloat16 (compute dtype; parameters stay float32)
  model.lowering = "auto"          # xla | gemm (row-lag GEMM convs, reshape pooling) | winograd (gemm +
                                   # Winograd for wide layers) | direct (winograd + a compiled direct conv
                                   # for narrow layers; needs a C++ compiler) | auto: direct (winograd
                                   # without a compiler) on a CPU of <= 2 cores, xla elsewhere (GPU,
                                   # many-core CPU; jaxcxr/conv/policy.py)

  config.train = train = ml_collections.ConfigDict()
  train.epochs = 8
  train.batch_size = 16
  train.eval_batch_size = 64      # 0 = train.batch_size
  train.num_devices = 0            # data parallel over this many of --platform's devices; 0 = all visible
                                   # (the batch sizes are global: each must divide by it)
  train.optimizer = "adam"         # sgd | adam | adamw
  train.learning_rate = 1e-3
  train.momentum = 0.9             # sgd only
  train.nesterov = True            # sgd only
  train.weight_decay = 1e-4        # adamw only
  train.schedule = "constant"      # constant | warmup_cosine | plateau (x plateau_factor when val loss stalls)
  train.warmup_steps = 0           # warmup_cosine only
  train.plateau_patience = 1       # plateau only: epochs without a lower val loss before each cut
  train.plateau_factor = 0.1       # plateau only
  train.class_balance = "pos_weight"  # pos_weight (auto from training frequencies) | sampling | none
  train.seed = 0
  train.log_step_times = False     # sync after every step and record each step's time (speedup runs)

  # How the test split is reported: the temperature and the operating point are chosen on the validation
  # split and applied to test; every test metric gets a bootstrap interval that resamples patients.
  config.eval = ev = ml_collections.ConfigDict()
  ev.threshold = "0.5"             # a probability (0.5) | youden (max sensitivity + specificity) | recall:0.95
  ev.bootstrap = 1000              # resamples for the intervals; 0 = none
  ev.confidence = 0.95
  ev.seed = 0
  ev.calibration = "temperature"   # one temperature per target fitted on validation (Guo et al. 2017) | none

  config.logging = logs = ml_collections.ConfigDict()
  logs.tensorboard = False         # per-epoch scalars in <workdir>/tensorboard (pip install 'jaxcxr[tensorboard]')
  logs.report = True               # <workdir>/report.html and its gallery's maps; False for sweeps and benchmarks

  config.checkpoint = ckpt = ml_collections.ConfigDict()
  ckpt.every_steps = 100           # and at every epoch's end, always; 0: at epoch ends only
  ckpt.keep = 3
  return config
