"""`graph_prune.masks.schedule` under its earlier, promised path.

The module object itself, not a copy: every name, private ones included,
and every patch of one are the same as in `graph_prune.masks.schedule`.
"""

import sys

from graph_prune.masks import schedule as _moved

sys.modules[__name__] = _moved
