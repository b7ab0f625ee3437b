"""Text as the condition of a cgan (ganforge[text]): the offline sentence encoder, captions
files, a tiny text-conditioned cgan on real images, `sample --prompt` and its errors."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image

from ganforge import data, text
from ganforge.config import build_config
from ganforge.errors import GanforgeError
from ganforge.sample import load_generator, write_samples
from ganforge.train import train

TINY = {"variant": "cgan", "condition": "text", "g_width": 8, "d_width": 8, "z_dim": 16,
        "batch_size": 16, "log_every": 5, "sample_every": 10, "grid_size": 20, "threads": 1}


def test_encoder_loads_offline_with_no_network(tmp_path):
    # a fresh process with every socket refused and an empty Hugging Face cache
    code = textwrap.dedent("""
        import socket, sys
        def refuse(*a, **k):
            raise OSError("network used")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        from ganforge import text
        e = text.embed(["a running shoe", "a jogging sneaker"])
        print(list(e.shape), round(float(e[0] @ e[1]), 3))
    """)
    env = {"HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    shape, cos = r.stdout.split("]")
    assert shape == "[2, 384" and float(cos) > 0.5
    assert not any((tmp_path / "hf").rglob("*.safetensors"))  # nothing fetched


def test_paraphrases_embed_closer_than_other_classes():
    e = text.embed(["a running shoe", "a sneaker for jogging", "a leather handbag",
                    "a pair of jeans"])
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-4)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.15 and sim[0, 1] > sim[0, 3] + 0.15
    # the held-out Fashion-MNIST phrasings are mostly nearest to their own class's captions
    classes = data.FASHION_MNIST_CLASSES
    bank = text.caption_bank(text.class_captions(classes, []), classes)
    held = [(k, p) for k, c in enumerate(classes) for p in text.FASHION_MNIST_HELDOUT[c]]
    nearest = (text.embed([p for _, p in held]) @ bank.class_emb.T).argmax(1)
    assert (nearest == torch.tensor([k for k, _ in held])).float().mean() >= 0.75
    trained = {p for ps in text.FASHION_MNIST_CAPTIONS.values() for p in ps}
    assert not trained & {p for _, p in held}  # held out means never trained on


def test_captions_files_and_their_errors(tmp_path):
    classes = ["ankle_boot", "bag", "sneaker"]
    (tmp_path / "captions.txt").write_text("# shop items\nsneaker: a sports shoe\n"
                                           "sneaker:  a   trainer \nbag: a handbag\n")
    caps = text.class_captions(classes, [tmp_path])
    assert caps == {"ankle_boot": ["ankle boot"], "bag": ["bag", "a handbag"],
                    "sneaker": ["sneaker", "a sports shoe", "a trainer"]}
    j = tmp_path / "other.json"
    j.write_text(json.dumps({"bag": "a purse", "sneaker": ["a trainer"]}))
    assert text.class_captions(classes, [tmp_path], str(j))["bag"] == ["bag", "a purse"]
    j.write_text(json.dumps({"hat": "a hat"}))
    with pytest.raises(GanforgeError, match="unknown class.*hat.*ankle_boot, bag, sneaker"):
        text.class_captions(classes, [], str(j))
    (tmp_path / "bad.txt").write_text("just a phrase\n")
    with pytest.raises(GanforgeError, match="bad.txt:1: expected `class: phrase`"):
        text.read_captions(tmp_path / "bad.txt", classes)
    with pytest.raises(GanforgeError, match="empty"):
        text.read_captions(_write(tmp_path / "e.txt", "bag:   \n"), classes)


def _write(path, content):
    path.write_text(content)
    return path


def test_missing_extra_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    text.encoder.cache_clear()
    try:
        with pytest.raises(GanforgeError, match=r"pip install 'ganforge\[text\]'"):
            text.embed(["a bag"])
    finally:
        text.encoder.cache_clear()
    for bad in ("", "   \n"):
        with pytest.raises(GanforgeError, match="the prompt is empty"):
            text.check_prompt(bad)


@pytest.fixture(scope="module")
def text_run(fmnist_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("textrun") / "run"
    train(build_config([{**TINY, "data": str(fmnist_dir), "steps": 10}]), run, progress=False)
    return run


def test_text_cgan_trains_and_samples_from_prompts(text_run, tmp_path):
    gen = load_generator(text_run)
    assert gen.kind == "conditional" and gen.text_dim == 384
    assert gen.config.condition == "text" and gen.config.text_model == text.DEFAULT_MODEL
    # the checkpoint holds the caption embeddings (per class and trained on), not the model
    assert torch.allclose(gen.G.class_text.norm(dim=1), torch.ones(10), atol=1e-4)
    assert gen.G.captions.emb.shape == (60, 384)  # 10 classes x (name + 5 phrasings)
    # a prompt is a mix of the training captions: the trained phrasing itself is (nearly) one
    e = gen.prompt_embedding("a trainer")
    cos = (e @ gen.G.captions.emb.T)[0]
    assert cos.max() > 0.95 and int(cos.argmax()) in range(7 * 6, 8 * 6)  # a Sneaker caption
    raw = gen.prompt_embedding("a trainer", temperature=0)
    assert not torch.allclose(raw, e)
    a = write_samples(gen, 4, None, seed=1, prompt="a running shoe")
    b = write_samples(load_generator(text_run), 4, None, seed=1, prompt=" a running  shoe ")
    c = write_samples(gen, 4, None, seed=1, prompt="a leather handbag")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert write_samples(gen, 2, None, class_="Bag").shape == (2, 28, 28, 1)
    with pytest.raises(GanforgeError, match="--class or --prompt, not both"):
        write_samples(gen, 2, None, class_="Bag", prompt="a bag")

    r = run_cli("sample", str(text_run), "--prompt", "a tennis shoe", "--n", "3",
                "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "for the prompt 'a tennis shoe'" in r.stdout
    files = sorted((tmp_path / "s").iterdir())
    assert len(files) == 3
    first = np.asarray(Image.open(files[0]))
    again = write_samples(gen, 3, None, seed=0, prompt="a tennis shoe")
    np.testing.assert_array_equal(first, again[0, :, :, 0])
    r = run_cli("sample", str(text_run), "--prompt", "  ", "--grid", str(tmp_path / "g.png"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "the prompt is empty" in r.stderr


def test_text_cgan_resumes_exactly(fmnist_dir, tmp_path):
    from ganforge import checkpoint

    cfg = {**TINY, "data": str(fmnist_dir)}
    train(build_config([{**cfg, "steps": 8}]), tmp_path / "straight", progress=False)
    train(build_config([{**cfg, "steps": 4}]), tmp_path / "split", progress=False)
    train(None, tmp_path / "split", resume=True, overrides={"steps": 8}, progress=False)
    a = checkpoint.load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.safetensors")
    b = checkpoint.load_checkpoint(tmp_path / "split" / "checkpoints" / "latest.safetensors")
    for prefix in ("G", "D"):
        for k, t in a.module_state(prefix).items():
            assert torch.equal(t, b.module_state(prefix)[k]), f"{prefix}.{k} differs"
    assert a.module_state("G")["captions.emb"].shape[0] == sum(
        1 + len(v) for v in text.FASHION_MNIST_CAPTIONS.values())


def test_prompt_on_a_label_model_is_a_clear_error(fmnist_dir, tmp_path):
    run = tmp_path / "run"
    train(build_config([{**TINY, "condition": "label", "data": str(fmnist_dir), "steps": 2,
                         "sample_every": 2}]), run, progress=False)
    with pytest.raises(GanforgeError, match="conditioned on class labels; use --class"):
        write_samples(load_generator(run), 2, None, prompt="a bag")
