"""Temperature scaling (Guo et al. 2017): one temperature per target, fitted on the validation split's logits
by minimising the log loss, so that a probability of 0.8 means about 8 positives in 10 films. Dividing a logit
by a positive temperature changes no ranking, so AUROC is unchanged; only the probabilities (and hence a fixed
threshold's calls) move. Numpy only: the export's loader applies it without jaxcxr's model code.
"""

import numpy as np

NONE = "none"
TEMPERATURE = "temperature"
METHODS = (TEMPERATURE, NONE)
# Beyond these the fit is degenerate (a split of one class, or scores that carry no signal): no correction then.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
  """Mean binary cross-entropy of `logits` against 0/1 `labels`, computed stably."""
  z, y = np.asarray(logits, np.float64), np.asarray(labels, np.float64)
  return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(labels: np.ndarray, logits: np.ndarray) -> tuple[float, str | None]:
  """The temperature T minimising the log loss of sigmoid(logits / T), and a note where none could be fitted
  (then 1.0). The loss is convex in 1/T, so Newton's method on 1/T, kept positive, finds the minimum."""
  y, z = np.asarray(labels, np.float64).ravel(), np.asarray(logits, np.float64).ravel()
  if len(y) == 0 or y.min() == y.max():
    return 1.0, "temperature scaling needs both classes in the validation split; temperature 1 used"
  if np.all(z == z[0]):
    return 1.0, "every validation logit is the same; temperature 1 used"
  low, high = 1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE
  inverse = 1.0
  for _ in range(100):
    p = sigmoid(inverse * z)
    gradient = np.mean((p - y) * z)
    curvature = np.mean(p * (1 - p) * z * z)
    if curvature <= 0:  # every probability saturated at 0 or 1: nothing more to learn from them
      break
    # Kept inside the range: a step past zero would flip every ranking.
    previous, inverse = inverse, float(np.clip(inverse - gradient / curvature, low, high))
    if abs(inverse - previous) < 1e-10 * inverse:
      break
  if inverse == high:
    return 1.0, (f"the validation split is separated perfectly: its log loss falls as the temperature goes to 0, "
                 f"past {MIN_TEMPERATURE}, so no temperature can be fitted on it; temperature 1 used")
  if inverse == low:
    return 1.0, (f"the best temperature lies above {MAX_TEMPERATURE}: the validation scores carry too little "
                 "signal to calibrate; temperature 1 used")
  return 1.0 / inverse, None


def brier(labels: np.ndarray, probabilities: np.ndarray) -> float:
  """Mean squared error of the probabilities against the 0/1 labels."""
  return float(np.mean((np.asarray(probabilities, np.float64) - np.asarray(labels, np.float64)) ** 2))
