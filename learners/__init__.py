"""Supervised few-shot learners, one file each; importing this package registers them all.

Gradient-based: ``maml`` and ``fomaml`` (maml.py), ``reptile`` (reptile.py), the ``pretrained``
baseline (pretrained.py).  Metric-based: ``protonet`` (protonet.py), ``matching``
(matching.py), ``relation`` (relation.py).  The RL agents are in ``metarl.agents``.
"""

from metarl.learners import maml  # noqa: F401
from metarl.learners import reptile  # noqa: F401
from metarl.learners import pretrained  # noqa: F401
from metarl.learners import protonet  # noqa: F401
from metarl.learners import matching  # noqa: F401
from metarl.learners import relation  # noqa: F401
