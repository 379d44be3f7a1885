"""Datasets shipped with graph_prune (no download, ever)."""

import os
from typing import NamedTuple

import numpy as np

_DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


class Dataset(NamedTuple):
  """A train/test split; images are float32 in [0, 1], labels int32."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray


def load_digits() -> Dataset:
  """The embedded 8x8 handwritten digits (1437 train, 360 test images).

  Returns:
    A `Dataset` with images of shape [n, 8, 8] scaled to [0, 1].
  """
  with np.load(os.path.join(_DATA_DIR, 'digits.npz')) as data:
    return Dataset(
        x_train=data['x_train'].astype(np.float32) / 16.0,
        y_train=data['y_train'].astype(np.int32),
        x_test=data['x_test'].astype(np.float32) / 16.0,
        y_test=data['y_test'].astype(np.int32))
