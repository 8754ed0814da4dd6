"""TensorBoard, read back as a user's TensorBoard would: every documented tag is there, on the
env-step axis; hyperparameters with final metrics; per-task images; the video and its skip
path; and the progress bar, which stays quiet when output is not a terminal."""

import glob
import io
import sys

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import metarl.video
from conftest import TINY
from metarl.config import build_dataclass, load_config
from metarl.logger import read_metrics
from metarl.registry import get_agent_spec
from metarl.tasks import TaskSampler, get_family
from metarl.train import train
from metarl.video import record_adapted_rollout

# The schema documented in the README (TensorBoard section); K = evaluation.num_stages.
COMMON_SCALARS = ["train/env_steps", "time/iteration_seconds", "time/env_steps_per_second",
                  "eval/adaptation_gain"]
STAGE_SCALARS = ["eval/return_stage_{k}", "eval/return_iqm_stage_{k}"]
AGENT_SCALARS = {
    "maml_trpo": ["train/return_before_adaptation", "train/return_after_adaptation", "train/policy_std",
                  "loss/surrogate_before", "loss/surrogate_after", "loss/kl", "loss/gradient_norm",
                  "loss/line_search_accepted", "loss/line_search_step_fraction", "loss/line_search_backtracks",
                  "time/sample_seconds", "time/update_seconds"],
    "multitask_trpo": ["train/return", "train/policy_std", "loss/surrogate_before", "loss/surrogate_after",
                       "loss/kl", "loss/gradient_norm", "loss/line_search_accepted",
                       "loss/line_search_step_fraction", "loss/line_search_backtracks",
                       "time/sample_seconds", "time/update_seconds"],
    "random": ["train/return", "time/sample_seconds"],
    "reptile": ["train/return_before_adaptation", "train/return_last_inner_step", "train/policy_std",
                "train/outer_lr", "loss/adaptation_distance", "time/sample_seconds", "time/update_seconds"],
    "pearl": ["train/return_prior", "train/return_posterior", "train/num_tasks_seen", "train/q_mean",
              "train/z_variance", "train/policy_entropy", "train/alpha",
              "loss/critic", "loss/policy", "loss/kl", "time/sample_seconds", "time/update_seconds",
              "time/gradient_steps_per_second"],
    "rl2": ["train/return_episode_0", "train/return_episode_1", "train/trial_return", "train/policy_std",
            "loss/policy", "loss/value", "loss/entropy", "loss/approx_kl", "loss/clip_fraction",
            "loss/gradient_norm", "time/sample_seconds", "time/update_seconds"],
}
IMAGES = ["eval/per_task_return"]


def test_logger_uses_no_private_summary_writer_api():
    import metarl.logger

    assert "._get_file_writer" not in Path(metarl.logger.__file__).read_text()


def test_timings_are_in_the_time_namespace():
    """Wall-clock figures live under time/, so comparing two runs' metrics can drop them as one."""
    for tag in COMMON_SCALARS + [tag for tags in AGENT_SCALARS.values() for tag in tags]:
        if "second" in tag:
            assert tag.startswith("time/"), tag
HPARAM_METRICS = ["hparams/return_before_adaptation", "hparams/return_after_adaptation",
                  "hparams/return_iqm_after_adaptation", "hparams/adaptation_gain"]
HPARAMS = ["env", "agent", "seed", "num_iterations", "evaluation.num_stages", "evaluation.episodes_per_stage",
           "agent_config.meta_batch_size"]


def accumulate(run_dir):
    """All event files of a run, merged: tag kind -> tag -> events (or plugin content)."""
    scalars, images, hparams, texts = {}, {}, {}, []
    for path in sorted(glob.glob(str(run_dir / "events.out.tfevents.*"))):
        accumulator = EventAccumulator(path, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        accumulator.Reload()
        tags = accumulator.Tags()
        for tag in tags["scalars"]:
            scalars.setdefault(tag, []).extend(accumulator.Scalars(tag))
        for tag in tags["images"]:
            images.setdefault(tag, []).extend(accumulator.Images(tag))
        texts += tags["tensors"]
        try:
            plugin_content = accumulator.PluginTagToContent("hparams")
        except KeyError:  # this event file holds no hparams summaries
            plugin_content = {}
        for tag, content in plugin_content.items():
            hparams[tag] = plugin_data_pb2.HParamsPluginData.FromString(content)
    return scalars, images, hparams, texts


def tiny(agent, run_dir, extra=()):
    if agent == "pearl":
        from test_pearl import TINY_PEARL
        return load_config(None, [*TINY_PEARL, "evaluation.num_stages=1", "evaluation.interval=2",
                                  "num_iterations=3", f"run_dir={run_dir}", *extra])
    if agent == "rl2":
        from test_rl2 import RL2_TINY
        return load_config(None, [*RL2_TINY,
                                  f"run_dir={run_dir}", *extra])
    options = TINY if agent in ("maml_trpo", "reptile") else [t for t in TINY if "hidden_sizes" not in t]
    return load_config(None, [*options, f"agent={agent}", f"run_dir={run_dir}", *extra])


@pytest.mark.parametrize("agent", ["maml_trpo", "multitask_trpo", "random", "rl2", "pearl", "reptile"])
def test_every_documented_tag_is_in_the_event_files(tmp_path, agent):
    run_dir = train(tiny(agent, tmp_path / agent), quiet=True)
    scalars, images, hparams, texts = accumulate(run_dir)
    K = 1  # TINY: evaluation.num_stages=1
    expected = COMMON_SCALARS + AGENT_SCALARS[agent] + HPARAM_METRICS
    expected += [tag.format(k=k) for tag in STAGE_SCALARS for k in range(K + 1)]
    missing = sorted(set(expected) - set(scalars))
    assert not missing, f"documented but not logged: {missing}"
    undocumented = sorted(tag for tag in scalars if tag not in expected)
    assert not undocumented, f"logged but not documented: {undocumented}"
    assert all(tag.split("/")[0] in ("train", "loss", "eval", "time", "hparams") for tag in scalars)

    # The x-axis is environment steps: the same steps metrics.jsonl records.
    metrics = read_metrics(run_dir)
    assert [e.step for e in scalars["train/env_steps"]] == [m["env_steps"] for m in metrics]
    assert [e.value for e in scalars["train/env_steps"]] == [float(m["env_steps"]) for m in metrics]
    evaluated = [m["env_steps"] for m in metrics if "eval/return_stage_0" in m]
    assert [e.step for e in scalars["eval/return_stage_0"]] == evaluated == [m["env_steps"] for m in metrics[1:]]

    # Per-task diagnostics: one image per evaluation, at the same steps.
    assert [e.step for e in images["eval/per_task_return"]] == evaluated
    assert images["eval/per_task_return"][0].width > 100

    # HParams tab: the flattened config with the final evaluation's metrics.
    start = hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert set(HPARAMS) <= set(start), sorted(set(HPARAMS) - set(start))
    assert start["agent"].string_value == agent and start["evaluation.num_stages"].number_value == 1
    metric_names = {m.name.tag for m in hparams["_hparams_/experiment"].experiment.metric_infos}
    assert metric_names == set(HPARAM_METRICS)
    final = scalars["hparams/return_after_adaptation"][-1].value
    assert final == pytest.approx(metrics[-1]["eval/return_stage_1"])
    assert "config/text_summary" in texts


class FakeRenderEnv:
    """Stands in for a MuJoCo env in rgb_array mode: a frame whose brightness counts the steps."""

    def __init__(self, fail: bool):
        self.fail, self.steps, self.closed = fail, 0, False

    def reset(self, *, seed=None):
        self.steps = 0
        return np.zeros(2), {}

    def render(self):
        if self.fail:
            raise RuntimeError("an OpenGL platform library has not been loaded into this process")
        return np.full((12, 16, 3), min(self.steps * 10, 255), dtype=np.uint8)

    def step(self, action):
        self.steps += 1
        return np.zeros(2), 0.0, False, self.steps >= 100, {}

    def close(self):
        self.closed = True


def test_video_is_skipped_with_a_one_line_notice_when_no_renderer_works(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(metarl.video, "_render_env", lambda *a, **k: FakeRenderEnv(fail=True))
    run_dir = train(tiny("maml_trpo", tmp_path / "run", ["progress=false"]), quiet=False)
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("video skipped")]
    assert len(notices) == 1, err
    assert "no offscreen renderer" in notices[0] and "MUJOCO_GL=" in notices[0] and "RuntimeError" in notices[0]
    _, images, _, texts = accumulate(run_dir)
    assert "eval/adapted_rollout" not in images and "eval/adapted_rollout/text_summary" in texts
    assert not (run_dir / "videos").exists()


def test_video_of_the_adapted_rollout_is_logged_when_rendering_works(tmp_path, monkeypatch):
    monkeypatch.setattr(metarl.video, "_render_env", lambda *a, **k: FakeRenderEnv(fail=False))
    run_dir = train(tiny("maml_trpo", tmp_path / "run"), quiet=True)
    _, images, _, _ = accumulate(run_dir)
    [video] = images["eval/adapted_rollout"]  # only at the final evaluation
    assert video.encoded_image_string[:6] == b"GIF89a" and (video.width, video.height) == (16, 12)
    gifs = list((run_dir / "videos").glob("adapted_rollout_iteration_000003.gif"))
    assert len(gifs) == 1 and gifs[0].read_bytes() == video.encoded_image_string


def test_families_without_a_renderer_get_no_video_and_a_clear_notice(monkeypatch):
    family = get_family("Navigation2D")
    result = record_adapted_rollout(object(), family, {"goal": [0.1, 0.1]}, num_stages=0,
                                    episodes_per_stage=1, seed=0, generator=torch.Generator())
    assert result.frames is None
    assert result.notice == ("video skipped: Navigation2D has no renderer (its env takes no "
                             "render_mode, width and height)")

    class NoRender(FakeRenderEnv):  # a plain Gymnasium env: Env.render raises NotImplementedError
        def render(self):
            raise NotImplementedError

    monkeypatch.setattr(metarl.video, "_render_env", lambda *a, **k: NoRender(fail=False))
    result = record_adapted_rollout(object(), family, {"goal": [0.1, 0.1]}, num_stages=0,
                                    episodes_per_stage=1, seed=0, generator=torch.Generator())
    assert result.notice == "video skipped: Navigation2D has no renderer (NoRender.render is not implemented)"


def test_real_offscreen_render_of_an_adapted_half_cheetah():
    """Renders for real where an offscreen GL exists (EGL here); elsewhere checks the notice."""
    family = get_family("HalfCheetahVel-MAML")
    spec = get_agent_spec("maml_trpo")
    probe = family.make_vector_env(1)
    agent = spec.build(build_dataclass(spec.config_class, {"hidden_sizes": [8]}), family=family,
                       observation_dim=probe.observation_dim, action_dim=probe.action_dim,
                       device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))
    task = TaskSampler(family, 0).held_out()[0]
    result = record_adapted_rollout(agent, family, task, num_stages=1, episodes_per_stage=1, seed=0,
                                    generator=torch.Generator().manual_seed(0), width=32, height=24,
                                    frame_stride=50)
    if result.frames is None:
        assert result.notice.startswith("video skipped: no offscreen renderer for HalfCheetahVel-MAML")
        assert "\n" not in result.notice
        return
    assert result.frames.shape == (1 + 200 // 50, 24, 32, 3) and result.frames.dtype == np.uint8
    assert result.frames.std() > 0


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_is_quiet_when_output_is_not_a_terminal(tmp_path, capsys):
    train(tiny("random", tmp_path / "a", ["progress=true"]), quiet=False)
    err = capsys.readouterr().err
    assert "run directory:" in err
    assert "env_steps=" not in err and "it/s" not in err and "\r" not in err


def test_progress_bar_shows_steps_speed_and_latest_evaluation_on_a_terminal(tmp_path, monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(tiny("random", tmp_path / "a", ["progress=true"]), quiet=False)
    text = terminal.getvalue()
    assert "env_steps=" in text and "steps_per_s=" in text and "eval=" in text
    assert "3/3" in text  # iterations done / total
