"""The import graph of graph_prune: no cycle, and data flows down.

Built from the source with `ast` (nothing is imported): an edge from each
module to every graph_prune module it imports, at module level, inside a
function (a lazy import is still a dependency) or under `TYPE_CHECKING`
(`graph_prune/__init__.py` names every public module there). `from a import
b` is an edge to `a.b` when that is a module, else to `a`. Importing a module
also runs its packages' `__init__.py`; those are not edges here, as every
package `__init__` of graph_prune imports nothing at run time.

Checked:
  * no cycle among graph_prune's modules;
  * only train/, study/ and cli/ import graph_prune.train, .study or .cli
    (data flows down: cli -> train/study -> export -> the pruned model ->
    passes and the pure core);
  * passes/ imports only passes/, errors and _tf_internal (the graph IR
    and its passes know nothing of the edges or of export).
"""

import ast
import os

import tensorflow as tf

_ROOT = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'graph_prune')
_UPPER = ('graph_prune.train', 'graph_prune.study', 'graph_prune.cli')

# Known violations of the layering, each for someone to fix (not export's):
# (importer, imported).
_KNOWN_UPWARD = set()
_PASSES_MAY_IMPORT = ('graph_prune.errors', 'graph_prune._tf_internal')
_KNOWN_PASSES = set()


def _modules():
  """Module name -> source path, for every .py file under graph_prune/."""
  found = {}
  for root, _, files in os.walk(_ROOT):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(root, name)
      rel = os.path.relpath(path, os.path.dirname(_ROOT))[: -len('.py')]
      parts = rel.split(os.sep)
      if parts[-1] == '__init__':
        parts = parts[:-1]
      found['.'.join(parts)] = path
  return found


def _package(module, path):
  return module if path.endswith('__init__.py') else module.rpartition('.')[0]


def _imports(module, path, modules):
  """The graph_prune modules that `module` imports."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:
        package = _package(module, path)
        for _ in range(node.level - 1):
          package = package.rpartition('.')[0]
        base = f'{package}.{base}' if base else package
      names = []
      for alias in node.names:
        full = f'{base}.{alias.name}'
        names.append(full if full in modules else base)
    else:
      continue
    for name in names:
      # `import a.b.c` names a.b.c; keep the longest known prefix.
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name.startswith('graph_prune') and name != module:
        found.add(name)
  return found


def import_graph():
  modules = _modules()
  return {m: _imports(m, p, modules) for m, p in modules.items()}


def find_cycle(graph):
  """One cycle of `graph` as a list of modules, or None."""
  state = {}  # module -> 1 while on the stack, 2 when done
  stack = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return stack[stack.index(nxt) :] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def _is_upper(module):
  return any(module == u or module.startswith(u + '.') for u in _UPPER)


class ImportGraphTest(tf.test.TestCase):
  def test_the_graph_is_read(self):
    graph = import_graph()
    # Facts of the tree that a broken reader would miss.
    self.assertIn('graph_prune.errors', graph['graph_prune.export.staging'])
    self.assertIn('graph_prune.passes.fold_masks', graph)
    self.assertIn('graph_prune.export.formats.tflite', graph)

  def test_find_cycle(self):
    self.assertIsNone(find_cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}))
    self.assertEqual(
      find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}), ['a', 'b', 'c', 'a']
    )

  def test_no_cycle(self):
    cycle = find_cycle(import_graph())
    self.assertIsNone(
      cycle,
      f'import cycle: {" -> ".join(cycle or ())}; move the shared '
      'part into a module both can import.',
    )

  def test_only_train_study_and_cli_import_them(self):
    upward = {
      (importer, imported)
      for importer, imports in import_graph().items()
      if not _is_upper(importer)
      for imported in imports
      if _is_upper(imported)
    }
    self.assertEqual(upward - _KNOWN_UPWARD, set())
    # A known exception that is fixed should leave this list.
    self.assertEqual(_KNOWN_UPWARD - upward, set())

  def test_passes_import_only_the_core(self):
    outside = {
      (importer, imported)
      for importer, imports in import_graph().items()
      if importer.startswith('graph_prune.passes')
      for imported in imports
      if not imported.startswith('graph_prune.passes')
      and imported not in _PASSES_MAY_IMPORT
    }
    self.assertEqual(outside - _KNOWN_PASSES, set())
    self.assertEqual(_KNOWN_PASSES - outside, set())

  def test_mask_math_and_config_import_only_each_other(self):
    # masks/ may read config/ (a weight's structure from the hparams),
    # config/ nothing of graph_prune but errors.
    allowed = {
      'graph_prune.config': ('graph_prune.config', 'graph_prune.errors'),
      'graph_prune.masks': (
        'graph_prune.masks',
        'graph_prune.config',
        'graph_prune.errors',
      ),
    }
    outside = {
      (importer, imported)
      for importer, imports in import_graph().items()
      for layer, ok in allowed.items()
      if importer.startswith(layer + '.')
      for imported in imports
      if not any(imported == o or imported.startswith(o + '.') for o in ok)
    }
    self.assertEqual(outside, set())

  def test_promised_paths_are_the_moved_modules(self):
    import graph_prune.masking
    import graph_prune.masks.masking
    import graph_prune.masks.schedule
    import graph_prune.schedule

    self.assertIs(graph_prune.masking, graph_prune.masks.masking)
    self.assertIs(graph_prune.schedule, graph_prune.masks.schedule)
    from graph_prune.masking import compute_mask  # noqa: F401
    from graph_prune.schedule import polynomial_schedule  # noqa: F401


if __name__ == '__main__':
  tf.test.main()
