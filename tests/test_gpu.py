"""The GPU update path (skipped cleanly where there is no CUDA device, as in CI)."""

import pytest
import torch

from conftest import TINY
from metarl.config import load_config
from metarl.logger import read_metrics
from metarl.train import train

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@requires_cuda
def test_maml_trains_on_cuda_and_tracks_the_cpu_run(tmp_path):
    runs = {}
    for device in ("cpu", "cuda"):
        config = load_config(None, [*TINY, f"device={device}", f"run_dir={tmp_path / device}"])
        runs[device] = read_metrics(train(config, quiet=True))
    # Same seeds and data; float arithmetic differs between devices, so compare loosely.
    first_cpu, first_gpu = runs["cpu"][0], runs["cuda"][0]
    assert first_gpu["train/return_before_adaptation"] == pytest.approx(first_cpu["train/return_before_adaptation"], rel=1e-3)
    assert first_gpu["loss/surrogate_before"] == pytest.approx(first_cpu["loss/surrogate_before"], abs=1e-4)
    assert first_gpu["loss/gradient_norm"] == pytest.approx(first_cpu["loss/gradient_norm"], rel=1e-3)


def test_device_auto_resolves_to_what_is_available():
    from metarl.device import resolve_device
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        from metarl.tasks import MetaRLError
        with pytest.raises(MetaRLError, match="no CUDA GPU"):
            resolve_device("cuda")
