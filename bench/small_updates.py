"""Benchmark: the masks of many small weights, together against one by one.

For the small weights (<= batched_masks.MAX_SIZE elements) of a real model
(keras.applications with weights=None at 32x32, or every weight given by
--shapes), at sparsity 0.5:
  * "together": `batched_masks.compute_masks_together` (what
    `plans.compute_masks` does with them);
  * "one by one": `masking.compute_mask` per weight (what it did before);
each inside a tf.function: its trace time and op count, its first call
(TensorFlow's graph optimisation and the run), then the median and minimum
of the steady call over interleaved rounds, and the ratios together / one
by one. The masks of both are compared and must be equal.

  .venv/bin/python bench/small_updates.py [--model=mobilenet_v2] [--rounds=7]
      [--calls=10] [--out=bench/results/small_updates.json]
"""

import argparse
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results_io

from graph_prune.masks import batched_masks
from graph_prune.masks import masking
from graph_prune.masks.mask_structure import MaskStructure

MODELS = {
  'mobilenet_v2': keras.applications.MobileNetV2,
  'efficientnet_b0': keras.applications.EfficientNetB0,
  'densenet121': keras.applications.DenseNet121,
  'resnet50': keras.applications.ResNet50,
}


def small_kernels(name):
  model = MODELS[name](weights=None, input_shape=(32, 32, 3), classes=10)
  return [
    v.numpy()
    for v in model.trainable_variables
    if len(v.shape) >= 2
    and 0 < v.shape.num_elements() <= batched_masks.MAX_SIZE
  ]


def variants(weights):
  structure = MaskStructure()
  count = len(weights)

  @tf.function
  def together():
    results = batched_masks.compute_masks_together(
      weights, [0.5] * count, [structure] * count
    )
    return [r.mask for r in results]

  @tf.function
  def one_by_one():
    return [masking.compute_mask(w, 0.5, structure).mask for w in weights]

  return {'together': together, 'one_by_one': one_by_one}


def trace_and_first(fn):
  start = time.perf_counter()
  graph = fn.get_concrete_function().graph
  traced = time.perf_counter() - start
  ops = len(graph.as_graph_def().node)
  start = time.perf_counter()
  masks = [m.numpy() for m in fn()]
  first = time.perf_counter() - start
  return {'trace_s': traced, 'ops': ops, 'first_call_s': first}, masks


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='mobilenet_v2', choices=list(MODELS))
  parser.add_argument('--rounds', type=int, default=7)
  parser.add_argument('--calls', type=int, default=10)
  parser.add_argument('--out', default='bench/results/small_updates.json')
  args = parser.parse_args()
  kernels = small_kernels(args.model)
  weights = [tf.constant(k) for k in kernels]
  fns = variants(weights)
  result = {
    'weights': len(weights),
    'elements': int(sum(k.size for k in kernels)),
  }
  # The process's first trace pays one-time costs; neither variant should.
  tf.function(lambda: masking.compute_mask(weights[0], 0.5, MaskStructure()))()
  masks = {}
  for name, fn in fns.items():
    result[name], masks[name] = trace_and_first(fn)
  for a, b in zip(masks['together'], masks['one_by_one']):
    np.testing.assert_array_equal(a, b)
  times = {name: [] for name in fns}
  for r in range(args.rounds):
    order = list(fns) if r % 2 == 0 else list(reversed(list(fns)))
    for name in order:
      calls = []
      for _ in range(args.calls):
        start = time.perf_counter()
        [m.numpy() for m in fns[name]()]
        calls.append(time.perf_counter() - start)
      times[name].append(float(np.median(calls)))
  for name in fns:
    result[name]['steady_ms_median'] = 1e3 * float(np.median(times[name]))
    result[name]['steady_ms_min'] = 1e3 * float(min(times[name]))
  ratios = [t / o for t, o in zip(times['together'], times['one_by_one'])]
  result['steady_ratio_median'] = float(np.median(ratios))
  result['steady_ratio_min'] = float(min(ratios))
  for key in ('trace_s', 'ops', 'first_call_s'):
    result[key + '_ratio'] = result['together'][key] / result['one_by_one'][key]
  print(
    f'{args.model}: {result["weights"]} small weights, '
    f'{result["elements"]} elements'
  )
  print(
    f'{"variant":<11} {"ops":>6} {"trace s":>8} {"1st call s":>10} '
    f'{"steady ms med":>13} {"min":>7}'
  )
  for name in fns:
    r = result[name]
    print(
      f'{name:<11} {r["ops"]:6d} {r["trace_s"]:8.2f} '
      f'{r["first_call_s"]:10.2f} {r["steady_ms_median"]:13.2f} '
      f'{r["steady_ms_min"]:7.2f}'
    )
  print(
    f'together / one by one: ops {result["ops_ratio"]:.3f}, trace '
    f'{result["trace_s_ratio"]:.3f}, first call '
    f'{result["first_call_s_ratio"]:.3f}, steady median '
    f'{result["steady_ratio_median"]:.3f} '
    f'(min {result["steady_ratio_min"]:.3f})'
  )
  results_io.write(args.out, {'args': vars(args), 'results': result})


if __name__ == '__main__':
  main()
