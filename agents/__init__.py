"""Meta-RL agents; importing this package registers every shipped agent."""

from metarl.agents import maml_trpo  # noqa: F401
from metarl.agents import baselines  # noqa: F401
from metarl.agents import rl2  # noqa: F401
from metarl.agents import pearl  # noqa: F401
from metarl.agents import reptile  # noqa: F401
