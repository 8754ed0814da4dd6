import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    torch.set_num_threads(1)


TINY = [
    "num_iterations=3", "checkpoint_interval=1", "evaluation.interval=2", "evaluation.num_tasks=4",
    "evaluation.num_stages=1", "evaluation.episodes_per_stage=4", "agent_options.meta_batch_size=4",
    "agent_options.episodes_per_task=4", "agent_options.hidden_sizes=[16,16]", "progress=false",
]
"""A MAML run small enough for a smoke test (seconds)."""


MUJOCO_GOAL_FAMILIES = [
    "HalfCheetahVel-MAML", "HalfCheetahVel-PEARL", "HalfCheetahDir", "AntVel", "AntDir", "AntDir2D",
    "AntGoal", "HumanoidDir",
]
DYNAMICS_FAMILIES = ["HopperRandParams", "Walker2DRandParams"]
MUJOCO_FAMILIES = MUJOCO_GOAL_FAMILIES + DYNAMICS_FAMILIES
POINT_ROBOT_FAMILIES = ["PointRobot-Dense", "PointRobot-Sparse"]
GOAL_FAMILIES = POINT_ROBOT_FAMILIES + MUJOCO_GOAL_FAMILIES
"""Families whose task is a goal (the reward changes, the physics does not)."""
FAMILY_NAMES = ["Navigation2D", *POINT_ROBOT_FAMILIES, *MUJOCO_FAMILIES]
"""Every shipped family (Meta-World's are registered only with the optional extra)."""


def build_agent(name: str, family, **options):
    """Agent ``name`` built for ``family`` on the CPU with ``options`` as its config (seed 0)."""
    from metarl.config import build_dataclass
    from metarl.registry import get_agent_spec

    spec = get_agent_spec(name)
    probe = family.make_vector_env(1)
    config = build_dataclass(spec.config_class, options)
    return spec.build(config, family=family, observation_dim=probe.observation_dim,
                      action_dim=probe.action_dim, device=torch.device("cpu"),
                      generator=torch.Generator().manual_seed(0))
