"""amp=auto on a CPU: the timed choice between float32 and bfloat16 (ganforge.amp_probe) and
the trainer's probe, which must leave the run exactly as it found it."""

import json

import pytest
import torch

from ganforge import amp_probe, data_cond
from ganforge import train as train_mod
from ganforge.config import build_config
from ganforge.train import Trainer, train

TINY = {"g_width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16, "log_every": 5,
        "sample_every": 10, "grid_size": 16, "eval_every": 0, "eval_n": 0}


def test_decide_needs_bf16_to_be_clearly_faster():
    assert amp_probe.decide([1.0, 1.0, 1.0], [0.5, 0.5, 0.5]).amp == "bf16"
    assert amp_probe.decide([1.0, 1.0, 1.0], [0.9, 0.9, 0.9]).amp == "bf16"  # 1.11x
    assert amp_probe.decide([1.0, 1.0, 1.0], [0.98, 0.98, 0.98]).amp == "off"  # 1.02x
    assert amp_probe.decide([1.0, 1.0, 1.0], [1.3, 1.3, 1.3]).amp == "off"
    c = amp_probe.decide([2.0, 2.0, 2.0], [1.6, 1.6, 1.6])
    assert c.speedup == pytest.approx(1.25) and c.steps == 3


def test_choose_alternates_warms_up_and_takes_medians():
    calls = []
    # warm-up steps are slow (kernels being built); one timed bf16 step is disturbed by load
    script = {None: iter([0.9, 1.0, 1.0, 1.0]), torch.bfloat16: iter([0.9, 0.8, 3.0, 0.8])}

    def fake_step(dtype):
        calls.append(dtype)
        return next(script[dtype])

    c = amp_probe.choose(fake_step, rounds=3)
    assert calls == [None, torch.bfloat16] * 4
    assert c.amp == "bf16" and c.speedup == pytest.approx(1.25)  # the 3.0 does not count


def test_choose_times_one_step_each_when_a_step_is_slow():
    calls = []

    def fake_step(dtype):
        calls.append(dtype)
        return 2.0 if dtype is None else 2.5

    c = amp_probe.choose(fake_step, rounds=3)
    assert len(calls) == 4 and c.steps == 1 and c.amp == "off"


def _state(t: Trainer):
    return ({f"{k}.{n}": v.clone() for k, m in t.modules.items()
             for n, v in m.state_dict().items()},
            [p.grad for m in t.modules.values() for p in m.parameters()],
            t.real_batch(), t.inputs())


@pytest.fixture(scope="module")
def edges_dir(tmp_path_factory):
    """100 pairs: Sobel edge map of a real Fashion-MNIST test item -> the item."""
    out = tmp_path_factory.mktemp("edges")
    data_cond.prepare_paired("fashion-mnist-edges:test", out, limit=100, progress=False)
    return out


# augmentation and dropout draw from the global RNG, D's (and G's) BatchNorm update their
# statistics, CycleGAN's history pool fills up in the probe's steps: all must happen on copies
VARIANT_CASES = {
    "dcgan+augment": {"variant": "dcgan", "augment": "color,translation,cutout"},
    "mlp": {"variant": "mlp"},
    "wgan-gp": {"variant": "wgan-gp"},
    "small-data": {"variant": "small-data", "augment": "translation", "augment_p": "auto"},
    "cgan": {"variant": "cgan"},
    "pix2pix": {"variant": "pix2pix"},
    "cyclegan": {"variant": "cyclegan", "res_blocks": 1, "pool_size": 4},
}


@pytest.mark.parametrize("case", list(VARIANT_CASES))
def test_the_probe_leaves_weights_statistics_data_order_and_rng_untouched(
        case, fmnist_dir, edges_dir, tmp_path, monkeypatch):
    choose = amp_probe.choose
    monkeypatch.setattr(amp_probe, "choose", lambda step, rounds=3: choose(step, rounds=1))
    extra = {"batch_size": 8, **VARIANT_CASES[case]}
    data_dir = edges_dir if case == "pix2pix" else fmnist_dir
    if case == "cyclegan":
        extra["data_b"] = str(fmnist_dir)
    cfg = build_config([{"data": str(data_dir), **TINY, "amp": "auto", **extra}])
    torch.manual_seed(123)
    plain = Trainer(cfg, tmp_path / "a", progress=False)
    torch.manual_seed(123)
    probed = Trainer(cfg, tmp_path / "b", progress=False)
    rng = torch.get_rng_state()
    choice = probed.probe_amp()
    assert torch.equal(rng, torch.get_rng_state()), "the probe consumed the global RNG"
    assert choice.steps == 1  # the probe's own timings went through amp_probe.choose
    a, b = _state(plain), _state(probed)
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        assert torch.equal(a[0][k], b[0][k]), f"{k} changed"
    assert all(g is None for g in b[1]), "the probe left gradients on the run's networks"
    for i, what in ((2, "the data sampler"), (3, "the latent stream")):
        assert a[i].keys() == b[i].keys()
        assert all(torch.equal(a[i][k], b[i][k]) for k in a[i]), f"the probe moved {what}"


def test_every_session_probes_once_and_trains_at_its_choice(fmnist_dir, tmp_path,
                                                           monkeypatch, capsys):
    # this CPU's flags may not allow bf16: pretend they do; the timings are scripted
    monkeypatch.setattr(train_mod, "native_bf16", lambda device: "bf16")
    speeds = iter([2.0, 0.5])  # the run's machine favours bf16, the resume's does not
    probes = []

    def scripted(step, rounds=3):
        step(None)
        step(torch.bfloat16)  # the real steps run too, on the copies
        probes.append(1)
        return amp_probe.decide([1.0], [1.0 / next(speeds)])

    monkeypatch.setattr(amp_probe, "choose", scripted)
    seen = []
    autocast = Trainer.autocast

    def spy(self):
        seen.append(self.amp_dtype)
        return autocast(self)

    monkeypatch.setattr(Trainer, "autocast", spy)
    run = tmp_path / "run"
    train(build_config([{"data": str(fmnist_dir), **TINY, "amp": "auto", "steps": 10}]), run,
          progress=False)
    assert "training step at 2.00x the speed of float32" in capsys.readouterr().out
    assert probes == [1] and seen and set(seen) == {torch.bfloat16}
    seen.clear()
    train(None, run, resume=True, overrides={"steps": 20}, progress=False)
    assert "training step at 0.50x" in capsys.readouterr().out
    assert probes == [1, 1] and seen and set(seen) == {None}
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [5, 10, 15, 20]


def test_amp_set_explicitly_is_never_probed(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "native_bf16", lambda device: "bf16")
    monkeypatch.setattr(amp_probe, "choose", lambda step, rounds=3: pytest.fail("probed"))
    for amp in ("off", "bf16"):
        cfg = build_config([{"data": str(fmnist_dir), **TINY, "amp": amp, "steps": 5}])
        train(cfg, tmp_path / amp, progress=False)
