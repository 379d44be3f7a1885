"""`graph_prune.masks.masking` under its earlier, promised path.

The module object itself, not a copy: every name, private ones included,
and every patch of one are the same as in `graph_prune.masks.masking`.
"""

import sys

from graph_prune.masks import masking as _moved

sys.modules[__name__] = _moved
