"""Task-distribution environments; importing this package registers every shipped family."""

from metarl.envs import navigation  # noqa: F401
