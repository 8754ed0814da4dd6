"""The supervised side of metarl: few-shot task sources (regression and classification).

Installed as ``metarl.supervised``; importing it registers the shipped sources.  The RL side is
``metarl.envs`` (task families) and ``metarl.agents``; the supervised learners are
``metarl.learners``; task sampling (``metarl.tasks.TaskSampler``), config, logging and the
evaluation statistics (``metarl.stats``) are shared.
"""

from metarl.supervised import sinusoid  # noqa: F401
from metarl.supervised import omniglot  # noqa: F401
