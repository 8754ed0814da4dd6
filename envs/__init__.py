"""Task-distribution environments; importing this package registers every shipped family
(with :func:`metarl.tasks.register_family` and as Gymnasium ids ``metarl/<family>-v0``)."""

from metarl.console import route_mujoco_warnings

route_mujoco_warnings()  # before any model is compiled, here and in every worker process

from metarl.envs import (  # noqa: E402, F401
    ant,
    half_cheetah,
    humanoid,
    metaworld,
    navigation,
    point_robot,
    rand_params,
)
