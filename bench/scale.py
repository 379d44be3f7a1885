"""Benchmark of issue 23: export, load and shrink of big pruned models.

Usage:
  .venv/bin/python bench/scale.py [--params=50e6,134e6,600e6 | --sizes=small]
      [--rounds=3] [--timeout=1800] [--out=bench/results/scale.json]
      [--tmpdir=DIR] [--width=4096] [--batch=8] [--nogzip] [--skip=shrink]

Models: Keras 3 MLPs of Dense layers `width` wide (ReLU, He-uniform kernels,
zero biases, the last layer `logits` linear), input `width` wide, as many
layers as make about `--params` parameters: 3 layers of 4096 are 50.3 M,
8 are 134 M, 36 are 604 M (2.4 GB of float32, past the 2 GB proto limit).
Models too small for 3 layers of `--width` have 3 narrower layers (a
multiple of 64). `--sizes=small` is 2 M and 8 M parameters, for a check of
the script in a few minutes; `--params` overrides `--sizes`.

Every stage runs in a fresh child process (this script with --stage), so
that each has its own peak RSS and nothing is cached between stages:
  startup        imports TensorFlow, Keras and graph_prune, builds and calls a
                 one-layer model: TensorFlow's own start-up footprint;
  dense          builds the model, `tf.saved_model.save` (timed alone);
  dense_load     `tf.saved_model.load` of it and the first call of its
                 `serving_default` on a fixed input;
  pruned         builds the same model (same seed), `apply_pruning` to
                 --target_sparsity with a schedule that one
                 `pruned.mask_update(1)` completes, the update, the pruned
                 model's first call (its output saved as .npy) and
                 `graph_prune.export_saved_model`, each timed;
  stripped_load  the stripped SavedModel loaded and called the same way,
                 its output compared with the pruned model's (max abs diff;
                 equal means within --equal_rtol of the output's max |y|);
  shrink         the same model unit-pruned (`granularity=unit`,
                 --shrink_sparsity, `logits` not pruned), updated and
                 exported with `export_saved_model(..., shrink=True)`.
Only the public API is used, so the script measures the export before and
after issue 23's rewrite alike. `export_saved_model` used to compute the
output's gzipped size (gzip -9 of the whole SavedModel) for its report; it
now measures it when the report's size is first read. Unless --nogzip, the
pruned stage times that computation on its output, as `gzip (on read)`.

A stage's peak RSS is its child's `ru_maxrss` (`os.wait4`), known also for
a child killed by the kernel for lack of memory; the child also reports its
VmHWM after each step (`+MiB` in the table: how much the step raised the
peak). The parent never imports TensorFlow, so it holds little memory while
a child runs. Rounds run the stages interleaved, the order of the groups
(startup), (dense, dense_load), (pruned, stripped_load), (shrink) rotating
per round, so load changes on a shared machine hit dense and pruned alike;
the tables give the median and minimum over rounds, and ratios are per round
(export / dense save, stripped load+call / dense load+call, shrunk export /
dense save in the same round), then their median and minimum. Per million
parameters: seconds/M of each step, MiB/M of each stage's peak RSS above the
start-up footprint; `xW` is that excess in multiples of the weights' bytes,
and `bound` checks issue 23's memory goal on the pruned stage: the peak RSS
of apply_pruning + mask_update + export (VmHWM reset after the build with
/proc/self/clear_refs; the model's first call comes after the export) at
most 3x the weights' bytes plus the start-up footprint (of the same round).

A stage that fails, times out (--timeout seconds) or is killed (return
code -9: out of memory) is reported as such and its dependants skipped; the
benchmark goes on. SavedModels go to a temporary directory (under --tmpdir)
removed at the end, each round's as soon as the round is done. Ends with
issue 23's goals, each measured at the run's size nearest the goal's, and
writes the rounds and summaries as JSON to --out (--json is an alias).
"""

import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import results_io  # bench/results_io.py, beside this script

SIZES = {'issue': [50e6, 134e6, 600e6], 'small': [2e6, 8e6]}
# Stage groups in round order (rotated per round); a stage after another in
# its group needs that one's output.
GROUPS = (
  ('startup',),
  ('dense', 'dense_load'),
  ('pruned', 'stripped_load'),
  ('shrink',),
)
STAGES = tuple(s for group in GROUPS for s in group)
NEEDS = {'dense_load': 'dense', 'stripped_load': 'pruned'}
# The SavedModel directory each stage writes, measured on disk.
SAVED_MODELS = {'dense': 'dense', 'stripped': 'pruned', 'shrunk': 'shrink'}

_PARAMS = flags.DEFINE_list(
  'params',
  [],
  'Parameter counts of the models, e.g. 2e6,8e6; overrides --sizes.',
)
_SIZES = flags.DEFINE_enum(
  'sizes',
  'issue',
  list(SIZES),
  'issue: 50 M, 134 M and 600 M parameters; small: 2 M and 8 M.',
)
_WIDTH = flags.DEFINE_integer('width', 4096, 'Width of the Dense layers.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Rows of the fixed input.')
_ROUNDS = flags.DEFINE_integer(
  'rounds', 3, 'Interleaved rounds.', lower_bound=1
)
_TIMEOUT = flags.DEFINE_float(
  'timeout', 1800, 'Seconds after which a stage is killed.'
)
_TARGET = flags.DEFINE_float(
  'target_sparsity', 0.9, 'Sparsity of the pruned stage.'
)
_SHRINK_SPARSITY = flags.DEFINE_float(
  'shrink_sparsity', 0.5, 'Unit sparsity of the shrink stage.'
)
_EQUAL_RTOL = flags.DEFINE_float(
  'equal_rtol',
  1e-5,
  'Outputs are equal when max |stripped - pruned| <= this x max |pruned|.',
)
_GZIP = flags.DEFINE_bool(
  'gzip',
  True,
  'Time the gzipped-size computation of the export report (on first read).',
)
_SKIP = flags.DEFINE_list(
  'skip',
  [],
  'Stages not run, reported as skipped (e.g. shrink: a 600 M point of the '
  'memory bound without the shrink stage, which needs the most memory).',
)
_TMPDIR = flags.DEFINE_string(
  'tmpdir', None, 'Where the temporary SavedModels go (default: $TMPDIR).'
)
_OUT = flags.DEFINE_string(
  'out',
  os.path.join(os.path.dirname(__file__), 'results', 'scale.json'),
  'JSON output path.',
)
flags.DEFINE_alias('json', 'out')
# A child's flags, set by the parent.
_STAGE = flags.DEFINE_enum(
  'stage', None, list(STAGES), 'Internal: run one stage in this process.'
)
_STAGE_DIR = flags.DEFINE_string(
  'stage_dir', None, "Internal: the round's SavedModel directory."
)
_RESULT = flags.DEFINE_string(
  'result', None, "Internal: where the child writes its stage's JSON."
)


@flags.validator('skip')
def _check_skip(values):
  unknown = [v for v in values if v not in STAGES]
  if unknown:
    raise flags.ValidationError(
      f'--skip entries {unknown} are not stages; choose from {list(STAGES)}.'
    )
  return True


@flags.validator('params')
def _check_params(values):
  for value in values:
    try:
      ok = float(value) >= 1
    except ValueError:
      ok = False
    if not ok:
      raise flags.ValidationError(
        f'--params entry {value!r} is not a parameter count; write e.g. '
        '--params=2e6,8e6.'
      )
  return True


def architecture(params, max_width):
  """(width, layers) of the MLP of about `params` parameters.

  Args:
    params: the parameter count asked for.
    max_width: the widest layer (--width).

  Returns:
    `max_width` and the nearest layer count when that is at least 3; else 3
    layers of the width (a multiple of 64, at least 64) nearest `params`.
  """
  layers = round(params / (max_width * max_width + max_width))
  if layers >= 3:
    return max_width, layers
  width = max(64, min(max_width, round(math.sqrt(params / 3) / 64) * 64))
  return width, 3


def parameter_count(width, layers):
  return layers * (width * width + width)


# ---------------------------------------------------------------------------
# The child: one stage, its steps timed, its JSON rewritten after each step.


class _Recorder:
  """A stage's results, written to --result after every step, so that a
  child killed mid-stage still reports the steps it finished."""

  def __init__(self, path):
    self.path = path
    self.data = {'steps': {}, 'hwm_mib': {'imports': _hwm_mib()}}
    self._write()

  @contextlib.contextmanager
  def step(self, name):
    start = time.perf_counter()
    yield
    self.data['steps'][name] = time.perf_counter() - start
    self.data['hwm_mib'][name] = _hwm_mib()
    self._write()

  def set(self, **values):
    self.data.update(values)
    self._write()

  def _write(self):
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(self.data, f)
    os.replace(tmp, self.path)


def _hwm_mib():
  """This process's peak RSS so far (VmHWM), in MiB."""
  with open('/proc/self/status') as f:
    for line in f:
      if line.startswith('VmHWM:'):
        return int(line.split()[1]) / 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _mlp(width, layers):
  import keras

  keras.utils.set_random_seed(0)
  dense = keras.layers.Dense
  hidden = [
    dense(width, activation='relu', kernel_initializer='he_uniform')
    for _ in range(layers - 1)
  ]
  last = dense(width, kernel_initializer='he_uniform', name='logits')
  return keras.Sequential([keras.Input((width,)), *hidden, last])


def _input(width):
  return np.random.RandomState(0).rand(_BATCH.value, width).astype('float32')


def _hparams(sparsity, unit):
  spec = (
    f'target_sparsity={sparsity},begin_pruning_step=0,'
    'end_pruning_step=1,sparsity_function_end_step=1'
  )
  if unit:
    spec += ',granularity=unit,do_not_prune=[logits]'
  return spec


def _serving_call(loaded, x):
  """The first call of `loaded`'s serving_default on `x`, as NumPy."""
  fn = loaded.signatures['serving_default']
  (name,) = fn.structured_input_signature[1]
  (out,) = fn(**{name: x}).values()
  return out.numpy()


def _stage_startup(rec, width, layers):
  del width, layers
  model = _mlp(8, 1)
  model(_input(8))
  rec.set(params=parameter_count(8, 1))


def _stage_dense(rec, width, layers):
  import tensorflow as tf

  with rec.step('build'):
    model = _mlp(width, layers)
  with rec.step('save'):
    tf.saved_model.save(model, os.path.join(_STAGE_DIR.value, 'dense'))


def _stage_load(rec, path, x, reference=None):
  import tensorflow as tf

  with rec.step('load'):
    loaded = tf.saved_model.load(path)
  with rec.step('first_call'):
    y = _serving_call(loaded, tf.constant(x))
  steps = rec.data['steps']
  rec.set(load_and_call=steps['load'] + steps['first_call'])
  if reference is not None:
    scale = float(np.abs(reference).max())
    diff = float(np.abs(y - reference).max())
    rec.set(
      max_abs_diff=diff,
      max_abs_output=scale,
      equal=bool(y.shape == reference.shape)
      and diff <= _EQUAL_RTOL.value * scale,
    )


def _stage_dense_load(rec, width, layers):
  del layers
  _stage_load(rec, os.path.join(_STAGE_DIR.value, 'dense'), _input(width))


def _reset_hwm():
  """Resets this process's VmHWM to its current RSS (Linux clear_refs 5)."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def _stage_pruned(rec, width, layers):
  import graph_prune

  with rec.step('build'):
    model = _mlp(width, layers)
  # Issue 23's bound is on the peak of apply_pruning + mask_update + export
  # alone: the peak is measured from here (the build's own transient peak is
  # kept in build_peak_mib and in the child's ru_maxrss).
  rec.set(build_peak_mib=_hwm_mib(), hwm_reset=_reset_hwm())
  with rec.step('apply_pruning'):
    pruned = graph_prune.apply_pruning(model, _hparams(_TARGET.value, False))
  with rec.step('mask_update'):
    pruned.mask_update(1)
  rec.set(sparsity=float(pruned.sparsity().overall))
  path = os.path.join(_STAGE_DIR.value, 'stripped')
  with rec.step('export'):
    graph_prune.export_saved_model(pruned, path)
  rec.set(three_step_peak_mib=_hwm_mib())
  with rec.step('first_call'):
    y = pruned(_input(width)).numpy()
  np.save(os.path.join(_STAGE_DIR.value, 'pruned_output.npy'), y)
  if _GZIP.value:
    from graph_prune.export import sizes  # what the export's report calls

    with rec.step('gzip (on read)'):
      sizes.gzipped_size(path)


def _stage_stripped_load(rec, width, layers):
  del layers
  reference = np.load(os.path.join(_STAGE_DIR.value, 'pruned_output.npy'))
  path = os.path.join(_STAGE_DIR.value, 'stripped')
  _stage_load(rec, path, _input(width), reference)


def _stage_shrink(rec, width, layers):
  import graph_prune

  with rec.step('build'):
    model = _mlp(width, layers)
  hparams = _hparams(_SHRINK_SPARSITY.value, True)
  with rec.step('apply_pruning'):
    pruned = graph_prune.apply_pruning(model, hparams)
  with rec.step('mask_update'):
    pruned.mask_update(1)
  path = os.path.join(_STAGE_DIR.value, 'shrunk')
  with rec.step('export'):
    report = graph_prune.export_saved_model(pruned, path, shrink=True)
  rec.set(
    stripped_params=report.total_params, stripped_nonzeros=report.nonzero_params
  )


STAGE_FNS = {
  'startup': _stage_startup,
  'dense': _stage_dense,
  'dense_load': _stage_dense_load,
  'pruned': _stage_pruned,
  'stripped_load': _stage_stripped_load,
  'shrink': _stage_shrink,
}


def run_child():
  import tensorflow as tf  # noqa: F401  (imports count as start-up)

  import graph_prune  # noqa: F401

  rec = _Recorder(_RESULT.value)
  (params,) = _PARAMS.value
  width, layers = architecture(float(params), _WIDTH.value)
  STAGE_FNS[_STAGE.value](rec, width, layers)
  rec.set(done=True)


# ---------------------------------------------------------------------------
# The parent: rounds of children, summaries, tables, goals.


def _wait(proc, timeout):
  """Waits for `proc` (killing its process group after `timeout` seconds).

  Returns:
    (return code, whether it timed out, its rusage).
  """
  deadline = time.monotonic() + timeout
  timed_out = False
  while True:
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid:
      break
    if time.monotonic() > deadline:
      timed_out = True
      os.killpg(proc.pid, signal.SIGKILL)
      pid, status, usage = os.wait4(proc.pid, 0)
      break
    time.sleep(0.02)
  proc.returncode = os.waitstatus_to_exitcode(status)
  return proc.returncode, timed_out, usage


# TensorFlow's and absl's log lines: 'I1206 22:58:02.63 ...', 'E0000 00:00...'.
_LOG_LINE = re.compile(r'^([IWEF]\d{4} |WARNING: All log messages)')


def _error_lines(path, count=20):
  """The last `count` lines of a child's stderr that are not log lines."""
  try:
    with open(path, errors='replace') as f:
      lines = [line.rstrip() for line in f if line.strip()]
  except OSError:
    return []
  return [line for line in lines if not _LOG_LINE.match(line)][-count:]


def run_stage(stage, params, stage_dir, timeout):
  """Runs `stage` in a fresh child; its record with status and peak RSS."""
  result = os.path.join(stage_dir, f'{stage}.json')
  stderr_path = os.path.join(stage_dir, f'{stage}.stderr')
  args = [
    sys.executable,
    os.path.abspath(__file__),
    f'--stage={stage}',
    f'--params={params}',
    f'--stage_dir={stage_dir}',
    f'--result={result}',
    f'--width={_WIDTH.value}',
    f'--batch={_BATCH.value}',
    f'--target_sparsity={_TARGET.value}',
    f'--shrink_sparsity={_SHRINK_SPARSITY.value}',
    f'--equal_rtol={_EQUAL_RTOL.value}',
    '--gzip' if _GZIP.value else '--nogzip',
  ]
  env = dict(os.environ)
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  start = time.perf_counter()
  with open(stderr_path, 'w') as stderr:
    proc = subprocess.Popen(
      args,
      stdout=subprocess.DEVNULL,
      stderr=stderr,
      env=env,
      start_new_session=True,  # a timeout kills the child's whole group
    )
    try:
      rc, timed_out, usage = _wait(proc, timeout)
    except BaseException:
      with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
      raise
  record = {
    'process_s': time.perf_counter() - start,
    'peak_rss_mib': usage.ru_maxrss / 1024,  # KiB on Linux
    'returncode': rc,
  }
  with contextlib.suppress(OSError, ValueError), open(result) as f:
    record.update(json.load(f))
  if timed_out:
    record['status'] = f'timeout {timeout:.0f}s'
  elif rc == -signal.SIGKILL:
    record['status'] = 'killed -9 (OOM?)'
  elif rc < 0:
    record['status'] = f'killed signal {-rc}'
  elif rc or not record.get('done'):
    record['status'] = f'failed rc={rc}'
    lines = _error_lines(stderr_path)
    record['error'] = lines[-1][:300] if lines else ''
    record['stderr_tail'] = lines
  else:
    record['status'] = 'ok'
  if record['status'] != 'ok':
    print(
      f'  {stage}: {record["status"]} {record.get("error", "")}'.rstrip(),
      flush=True,
    )
  return record


def _dir_size(path):
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total


def one_round(params, r, tmp):
  """Every stage once for the model of `params` parameters, round `r`."""
  stage_dir = os.path.join(tmp, f'p{params:.0f}_r{r}')
  os.makedirs(stage_dir)
  order = GROUPS[r % len(GROUPS) :] + GROUPS[: r % len(GROUPS)]
  records = {}
  try:
    for stage in (s for group in order for s in group):
      need = NEEDS.get(stage)
      if stage in _SKIP.value:
        records[stage] = {'status': 'skipped: --skip'}
        continue
      if need and records[need]['status'] != 'ok':
        records[stage] = {'status': f'skipped: {need} not ok'}
        continue
      records[stage] = run_stage(stage, params, stage_dir, _TIMEOUT.value)
    for name, stage in SAVED_MODELS.items():
      path = os.path.join(stage_dir, name)
      if os.path.isdir(path):
        records[stage]['disk_mib'] = _dir_size(path) / 2**20
        pb = os.path.join(path, 'saved_model.pb')
        if os.path.exists(pb):
          records[stage]['pb_mib'] = os.path.getsize(pb) / 2**20
  finally:
    shutil.rmtree(stage_dir, ignore_errors=True)
  return records


# Rows of the time table: (stage, step, reference (stage, step) of the ratio).
TIME_ROWS = (
  ('startup', 'process', None),
  ('dense', 'build', None),
  ('dense', 'save', None),
  ('dense_load', 'load', None),
  ('dense_load', 'first_call', None),
  ('dense_load', 'load_and_call', None),
  ('pruned', 'build', None),
  ('pruned', 'apply_pruning', None),
  ('pruned', 'mask_update', None),
  ('pruned', 'first_call', None),
  ('pruned', 'export', ('dense', 'save')),
  ('pruned', 'gzip (on read)', None),
  ('stripped_load', 'load', ('dense_load', 'load')),
  ('stripped_load', 'first_call', ('dense_load', 'first_call')),
  ('stripped_load', 'load_and_call', ('dense_load', 'load_and_call')),
  ('shrink', 'build', None),
  ('shrink', 'apply_pruning', None),
  ('shrink', 'mask_update', None),
  ('shrink', 'export', ('dense', 'save')),
)


def _value(record, step):
  """Seconds of `step` in a stage's record, or None."""
  if record is None:
    return None
  if step == 'process':
    return record.get('process_s')
  if step == 'load_and_call':
    return record.get('load_and_call')
  return record.get('steps', {}).get(step)


def _hwm_increase(record, step):
  """MiB by which `step` raised its child's peak RSS, or None."""
  hwm = (record or {}).get('hwm_mib', {})
  if step not in hwm:
    return None
  names = list(hwm)
  return hwm[step] - hwm[names[names.index(step) - 1]]


def _stats(values):
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {'median': float(np.median(values)), 'min': float(min(values))}


def _status(records):
  """'ok', or the first other status with how many rounds had it."""
  statuses = [r.get('status', 'missing') for r in records]
  bad = [s for s in statuses if s != 'ok']
  if not bad:
    return 'ok'
  return f'{bad[0]} {len(bad)}/{len(statuses)}'


def summarize(params, rounds):
  """Medians and minima over rounds of every step, ratio and memory."""
  mparams = params / 1e6
  weights_mib = params * 4 / 2**20
  times = {}
  for stage, step, ref in TIME_ROWS:
    records = [r.get(stage) for r in rounds]
    if step not in ('process', 'load_and_call') and not any(
      step in (rec or {}).get('steps', {}) for rec in records
    ):
      continue
    row = {'status': _status(records)}
    row['seconds'] = _stats([_value(rec, step) for rec in records])
    row['hwm_increase_mib'] = _stats(
      [_hwm_increase(rec, step) for rec in records]
    )
    if ref is not None:
      ratios = []
      for r in rounds:
        a, b = _value(r.get(stage), step), _value(r.get(ref[0]), ref[1])
        if r.get(stage, {}).get('status') == 'ok' and a is not None and b:
          ratios.append(a / b)
      row['ratio_to'] = f'{ref[0]} {ref[1]}'
      row['ratio'] = _stats(ratios)
    if row['seconds']:
      row['seconds_per_m'] = row['seconds']['median'] / mparams
    times[f'{stage}/{step}'] = row
  memory = {}
  for stage in STAGES:
    records = [r.get(stage) for r in rounds]
    row = {'status': _status(records)}
    row['peak_rss_mib'] = _stats(
      [(rec or {}).get('peak_rss_mib') for rec in records]
    )
    excess = []
    bound = []
    for r in rounds:
      record = r.get(stage) or {}
      peak = record.get('peak_rss_mib')
      startup = r.get('startup') or {}
      base = startup.get('peak_rss_mib')
      if peak is None or startup.get('status') != 'ok':
        continue
      excess.append(peak - base)
      # The bound: the peak of apply_pruning + mask_update + export.
      steps_peak = record.get('three_step_peak_mib', peak)
      bound.append(steps_peak <= 3 * weights_mib + base)
    if stage == 'pruned':
      row['three_step_peak_mib'] = _stats(
        [(rec or {}).get('three_step_peak_mib') for rec in records]
      )
    row['excess_mib'] = _stats(excess)
    if excess and stage != 'startup':
      row['mib_per_m'] = row['excess_mib']['median'] / mparams
      row['x_weights'] = row['excess_mib']['median'] / weights_mib
    if stage == 'pruned':
      ok = [r.get('pruned', {}).get('status') == 'ok' for r in rounds]
      row['within_bound'] = bool(bound) and all(bound) and all(ok)
    row.update(_keyed_stats(records, 'disk_mib'))
    row.update(_keyed_stats(records, 'pb_mib'))
    if stage == 'stripped_load':
      # Over the rounds whose load and call ran; the status says how many.
      compared = [rec for rec in records if rec and 'equal' in rec]
      row['max_abs_diff'] = max(
        (rec['max_abs_diff'] for rec in compared), default=None
      )
      row['equal'] = bool(compared) and all(rec['equal'] for rec in compared)
    if stage == 'pruned':
      row['sparsity'] = _keyed_stats(records, 'sparsity').get('sparsity')
    memory[stage] = row
  return {'times': times, 'memory': memory}


def _keyed_stats(records, key):
  stats = _stats([(rec or {}).get(key) for rec in records])
  return {key: stats} if stats else {}


def _fmt(value, spec):
  """`value` formatted by `spec`, or '-' as wide as the spec says."""
  if value is None:
    return '-'.rjust(int(re.match(r'\d*', spec).group() or 0))
  return format(value, spec)


def _get(row, key, agg):
  stats = row.get(key)
  return None if stats is None else stats[agg]


def print_tables(results):
  print(
    f'\n{"params":>8} {"stage":<14} {"step":<17} {"status":<26} '
    f'{"med s":>8} {"min s":>8} {"x ref":>6} {"min x":>6} {"s/M":>7} '
    f'{"+MiB":>7}  ratio to'
  )
  for res in results.values():
    label = f'{res["params"] / 1e6:.1f}M'
    for key, row in res['summary']['times'].items():
      stage, step = key.split('/')
      print(
        f'{label:>8} {stage:<14} {step:<17} {row["status"]:<26} '
        f'{_fmt(_get(row, "seconds", "median"), "8.2f")} '
        f'{_fmt(_get(row, "seconds", "min"), "8.2f")} '
        f'{_fmt(_get(row, "ratio", "median"), "6.2f")} '
        f'{_fmt(_get(row, "ratio", "min"), "6.2f")} '
        f'{_fmt(row.get("seconds_per_m"), "7.3f")} '
        f'{_fmt(_get(row, "hwm_increase_mib", "median"), "7.0f")}  '
        f'{row.get("ratio_to", "")}'
      )
  print(
    f'\n{"params":>8} {"stage":<14} {"status":<26} {"peak MiB":>9} '
    f'{"min MiB":>8} {"-TF MiB":>8} {"MiB/M":>6} {"xW":>5} {"bound":>5} '
    f'{"disk MiB":>9} {"pb MiB":>8}  check'
  )
  for res in results.values():
    label = f'{res["params"] / 1e6:.1f}M'
    for stage, row in res['summary']['memory'].items():
      check = ''
      if 'within_bound' in row:
        bound = 'pass' if row['within_bound'] else 'FAIL'
      else:
        bound = ''
      if stage == 'pruned' and row.get('sparsity'):
        check = f'sparsity {row["sparsity"]["median"]:.4f}'
      if stage == 'stripped_load' and row.get('max_abs_diff') is not None:
        check = f'max |diff| {row["max_abs_diff"]:.3g}: {_equal_text(row)}'
      print(
        f'{label:>8} {stage:<14} {row["status"]:<26} '
        f'{_fmt(_get(row, "peak_rss_mib", "median"), "9.0f")} '
        f'{_fmt(_get(row, "peak_rss_mib", "min"), "8.0f")} '
        f'{_fmt(_get(row, "excess_mib", "median"), "8.0f")} '
        f'{_fmt(row.get("mib_per_m"), "6.2f")} '
        f'{_fmt(row.get("x_weights"), "5.2f")} {bound:>5} '
        f'{_fmt(_get(row, "disk_mib", "median"), "9.1f")} '
        f'{_fmt(_get(row, "pb_mib", "median"), "8.2f")}  {check}'
      )


def _nearest(results, target):
  """The result whose parameter count is nearest `target` (log scale)."""
  return min(
    results.values(), key=lambda res: abs(math.log(res['params'] / target))
  )


def _ratio_goal(results, target, key, limit, what):
  res = _nearest(results, target)
  row = res['summary']['times'].get(key, {})
  ratio = row.get('ratio')
  if row.get('status') != 'ok' or ratio is None:
    stage = key.split('/')[0]
    verdict, text = False, res['summary']['memory'][stage]['status']
  else:
    verdict = ratio['median'] <= limit
    text = f'{ratio["median"]:.2f}x (median; min {ratio["min"]:.2f}x)'
  return _goal(what, target, res, verdict, text)


def _goal(what, target, res, verdict, text):
  at = ''
  if abs(math.log(res['params'] / target)) > math.log(1.25):
    at = f' [measured at {res["params"] / 1e6:.1f} M, not {target / 1e6:.0f} M]'
  line = f'goal: {what}: {text} {"PASS" if verdict else "FAIL"}{at}'
  return {'goal': what, 'pass': verdict, 'params': res['params'], 'line': line}


def _equal_text(loaded):
  if loaded.get('max_abs_diff') is None:
    return 'not compared'
  return 'equal' if loaded['equal'] else 'NOT EQUAL'


def goals(results):
  out = [
    _ratio_goal(
      results,
      134e6,
      'pruned/export',
      3,
      'export of the 134 M model at most 3x its dense save',
    ),
    _ratio_goal(
      results,
      134e6,
      'stripped_load/load_and_call',
      1.5,
      'load + first call of the stripped 134 M model at most 1.5x dense',
    ),
  ]
  res = _nearest(results, 600e6)
  memory = res['summary']['memory']
  pruned, loaded = memory['pruned'], memory['stripped_load']
  verdict = (
    pruned['status'] == 'ok'
    and loaded['status'] == 'ok'
    and loaded.get('equal', False)
    and pruned.get('within_bound', False)
  )
  peak = _get(pruned, 'three_step_peak_mib', 'median')
  if peak is None:
    peak = _get(pruned, 'peak_rss_mib', 'median')
  startup = memory['startup']
  bound = None
  if startup['status'] == 'ok':
    bound = 3 * res['params'] * 4 / 2**20 + startup['peak_rss_mib']['median']
  text = (
    f'export {pruned["status"]}, load {loaded["status"]}, outputs '
    f'{_equal_text(loaded)}, peak RSS '
    f'{_fmt(peak, ".0f")} MiB over apply_pruning + mask_update + export '
    f'(bound {_fmt(bound, ".0f")} MiB)'
  )
  what = '600 M exported and loaded back, outputs equal, RSS within bound'
  out.append(_goal(what, 600e6, res, verdict, text))
  out.append(
    _ratio_goal(
      results,
      134e6,
      'shrink/export',
      5,
      'shrink of a unit-pruned 134 M model at most 5x the dense save',
    )
  )
  return out


def run_parent():
  values = [float(p) for p in _PARAMS.value] or SIZES[_SIZES.value]
  tmp = tempfile.mkdtemp(prefix='graph_prune_scale_', dir=_TMPDIR.value)
  results = {}
  try:
    for value in values:
      width, layers = architecture(value, _WIDTH.value)
      params = parameter_count(width, layers)
      print(
        f'{params / 1e6:.1f} M parameters: {layers} Dense layers of {width}, '
        f'{params * 4 / 2**30:.2f} GiB of float32 weights',
        flush=True,
      )
      rounds = []
      for r in range(_ROUNDS.value):
        start = time.perf_counter()
        rounds.append(one_round(value, r, tmp))
        print(
          f'  round {r + 1}/{_ROUNDS.value}: '
          f'{time.perf_counter() - start:.0f} s',
          flush=True,
        )
      results[f'{params}'] = {
        'params': params,
        'width': width,
        'layers': layers,
        'weights_bytes': params * 4,
        'rounds': rounds,
        'summary': summarize(params, rounds),
      }
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  print_tables(results)
  goal_lines = goals(results)
  print()
  for goal in goal_lines:
    print(goal['line'])
  args = {
    name: flags.FLAGS[name].value
    for name in (
      'params',
      'sizes',
      'width',
      'batch',
      'rounds',
      'timeout',
      'target_sparsity',
      'shrink_sparsity',
      'equal_rtol',
      'gzip',
    )
  }
  args['command'] = ' '.join(sys.argv)
  results_io.write(
    _OUT.value, {'args': args, 'results': results, 'goals': goal_lines}
  )


def main(argv):
  del argv
  if _STAGE.value:
    run_child()
  else:
    run_parent()


if __name__ == '__main__':
  app.run(main)
