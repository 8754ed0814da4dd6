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
