"""Moved: the frozen graph format and the 2 GB proto limit.

`freeze` and `FrozenGraph` are graph_prune/export/formats/frozen_graph.py;
`check_fits`, `weight_bytes` and `PROTO_LIMIT_BYTES` are
graph_prune/export/formats/proto_limit.py (read there: replacing the limit
here changes nothing). Importable from here as before the move.
"""

from graph_prune.export.formats.frozen_graph import freeze  # noqa: F401
from graph_prune.export.formats.frozen_graph import FrozenGraph  # noqa: F401
from graph_prune.export.formats.proto_limit import check_fits  # noqa: F401
from graph_prune.export.formats.proto_limit import PROTO_LIMIT_BYTES  # noqa: F401
from graph_prune.export.formats.proto_limit import weight_bytes  # noqa: F401
