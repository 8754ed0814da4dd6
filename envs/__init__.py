"""Task-distribution environments; importing this package registers every shipped family
(with :func:`metarl.tasks.register_family` and as Gymnasium ids ``metarl/<family>-v0``)."""

from metarl.envs import (  # noqa: F401
    ant,
    half_cheetah,
    humanoid,
    metaworld,
    navigation,
    point_robot,
    rand_params,
)
