"""The learning-rate schedule and the EMA of the trained weights: the average's arithmetic, what a run exports,
and a killed run that resumes to the uninterrupted average."""

import json
import signal
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from stage import config
from stage.testing.cache import make_toy_cache
from stage.testing.config import tiny_overlay
from stage.train.ema import PREFIX, WeightEMA
from stage.train.loop import Trainer
from stage.train.optim import lr_at
from test_train_resume import REPO, _assert_same_weights, _command, _start_and_interrupt

EMA_CONFIG = tiny_overlay({"train": {"stage1": {"steps": 10, "ema_decay": 0.8, "lr_schedule": "cosine"}}})


def test_cosine_schedule_warms_up_then_falls_to_zero_and_constant_stays():
    cfg = {"lr": 1e-3, "warmup_steps": 4, "steps": 20, "lr_schedule": "cosine"}
    lrs = [lr_at(s, cfg) for s in range(20)]
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[4] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:]))
    assert 0 < lrs[-1] < 0.01 * 1e-3
    assert lrs[4 + 8] == pytest.approx(0.5e-3)  # half way through the decay: half the peak
    constant = [lr_at(s, {**cfg, "lr_schedule": "constant"}) for s in range(20)]
    assert constant[:4] == lrs[:4] and constant[4:] == [1e-3] * 16


def test_ema_is_the_closed_form_average_of_the_weights_it_saw():
    w = torch.nn.Parameter(torch.zeros(3))
    ema = WeightEMA({"w": w}, decay=0.9)
    values = [torch.full((3,), float(v)) for v in (1, 2, 4, 8)]
    for v in values:
        with torch.no_grad():
            w.copy_(v)
        ema.update()
    expected = 0.9 ** 4 * 0.0 + sum(0.1 * 0.9 ** (3 - i) * v for i, v in enumerate(values))
    assert torch.allclose(ema.average["w"], expected)
    ema.copy_to_weights()
    assert torch.allclose(w.detach(), expected)


def test_ema_checkpoint_state_round_trips_and_is_checked():
    w = torch.nn.Parameter(torch.arange(4.0))
    ema = WeightEMA({"w": w}, decay=0.5)
    ema.update()
    state = ema.state_tensors()
    other = WeightEMA({"w": torch.nn.Parameter(torch.zeros(4))}, decay=0.5)
    assert other.check_state(state) is None
    other.load_state(state)
    assert torch.equal(other.average["w"], ema.average["w"]) and other.updates == 1
    assert "missing" in other.check_state({})
    assert "[2]" in other.check_state({**state, PREFIX + "w": torch.zeros(2)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    cache = make_toy_cache(root)
    cfg_file = root / "config.yaml"
    cfg_file.write_text(json.dumps(EMA_CONFIG))
    return root, cache, cfg_file


def test_a_run_exports_the_average_its_last_checkpoint_holds(setup):
    root, cache, _ = setup
    out = root / "ref"
    assert Trainer(config.validate(EMA_CONFIG), 1, None, cache, out, progress=False).run() == 0
    last = out / "checkpoints" / "step-0000010"
    raw, extra = load_file(str(last / "model.safetensors")), load_file(str(last / "extra-rank0.safetensors"))
    exported = load_file(str(out / "model.safetensors"))
    averaged = [k for k in exported if PREFIX + "model." + k in extra]
    assert averaged and int(extra[PREFIX + "updates"]) == 10
    for k in averaged:
        assert torch.equal(exported[k], extra[PREFIX + "model." + k])
    assert any(not torch.equal(exported[k], raw[k]) for k in averaged), "the export is the last step's weights"


def test_a_killed_run_resumes_to_the_uninterrupted_average(setup):
    root, cache, cfg_file = setup
    out = root / "killed"
    rc, log = _start_and_interrupt(_command(cfg_file, cache, out, 1), out / "checkpoints", 4, signal.SIGKILL)
    assert rc == -signal.SIGKILL, log
    done = subprocess.run(_command(cfg_file, cache, out, 1, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming stage 1" in done.stdout
    if not (root / "ref" / "model.safetensors").is_file():
        Trainer(config.validate(EMA_CONFIG), 1, None, cache, root / "ref", progress=False).run()
    _assert_same_weights(root / "ref", out)
