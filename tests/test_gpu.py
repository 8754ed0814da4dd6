"""The GPU update path (skipped cleanly where there is no CUDA device, as in CI)."""

import pytest
import torch

from conftest import TINY
from test_baselines import TINY_BASELINE
from test_pearl import TINY_PEARL
from test_reptile import TINY_REPTILE
from test_rl2 import RL2_TINY
from test_supervised_cli import TINY_SINUSOID
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


GPU_RUNS = {
    "rl2": RL2_TINY,
    "pearl": TINY_PEARL,
    "reptile": TINY_REPTILE,
    "multitask_trpo": [*TINY_BASELINE, "agent=multitask_trpo"],
    "maml_sinusoid": [*TINY_SINUSOID, "agent=maml"],
    "protonet_glyphs": ["env=Glyphs", "agent=protonet", "num_iterations=4", "checkpoint_interval=2",
                        "evaluation.interval=2", "evaluation.num_tasks=8", "progress=false"],
}
"""A tiny run of every other agent and learner (MAML-TRPO's is above)."""


def _differences(cpu: dict, gpu: dict, *, rel: float, abs_: float) -> list[str]:
    """Keys of one metrics row whose CPU and GPU values differ beyond the tolerance."""
    return [f"{key}: cpu {cpu[key]!r} gpu {gpu.get(key)!r}" for key in cpu
            if not key.startswith("time/") and isinstance(cpu[key], (int, float))
            and gpu.get(key) != pytest.approx(cpu[key], rel=rel, abs=abs_)]


DEVICE_STREAM_KEYS = {"pearl": {"loss/critic", "loss/kl", "loss/policy", "train/alpha", "train/policy_entropy",
                                 "train/q_mean", "train/return_posterior", "train/z_variance"}}
"""First-iteration numbers drawn from a generator that lives on the run's device (PEARL's
``update_generator``: replay indices, posterior contexts and update noise, drawn without a host
round trip): CUDA's stream is not the CPU's, so they differ between devices by design; each
device on its own gives the same numbers for the same seed."""


@requires_cuda
@pytest.mark.parametrize("name", sorted(GPU_RUNS))
def test_every_agent_trains_on_cuda_tracks_the_cpu_run_and_its_checkpoint_evaluates_on_the_cpu(tmp_path, name):
    """The same seed on the CPU and on the GPU: the first iteration (same data; the update's
    float arithmetic differs between devices) logs the same numbers to 1e-3, except those drawn
    from a generator on the device (:data:`DEVICE_STREAM_KEYS`); a second GPU run logs exactly
    the same numbers as the first; the GPU run's checkpoint loads on a machine without one
    (device=cpu) and evaluates to what the GPU run logged, to 1e-3."""
    from metarl.train import evaluate_run, load_run

    metrics = {}
    for device, run_dir in (("cpu", "cpu"), ("cuda", "cuda"), ("cuda", "cuda_again")):
        metrics[run_dir] = read_metrics(train(load_config(None, [*GPU_RUNS[name], f"device={device}",
                                                                f"run_dir={tmp_path / run_dir}"]), quiet=True))
    exempt = DEVICE_STREAM_KEYS.get(name, set())
    differences = [d for d in _differences(metrics["cpu"][0], metrics["cuda"][0], rel=1e-3, abs_=1e-4)
                   if d.split(":")[0] not in exempt]
    repeated = [d for cpu_row, gpu_row in zip(metrics["cuda"], metrics["cuda_again"])
                for d in _differences(cpu_row, gpu_row, rel=0, abs_=0)]
    print(name, "CPU vs GPU:", differences, "GPU vs GPU:", repeated)
    assert not differences, "\n".join(differences)
    assert not repeated, "the same seed on the GPU twice: " + "\n".join(repeated)

    run, iteration = load_run(tmp_path / "cuda", device="cpu")
    try:
        result = evaluate_run(run, iteration=iteration)
    finally:
        run.close()
    metric, stage = result.get("metric", "return"), result["stages"][-1]
    key = f"eval/{metric}_stage_{stage['stage']}"
    logged = [row for row in metrics["cuda"] if key in row][-1][key]
    assert stage[metric]["mean"] == pytest.approx(logged, rel=1e-3, abs=1e-4), (key, logged, stage[metric])
