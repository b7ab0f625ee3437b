"""The command with no variant or preset: a recipe chosen from the data, said and recorded;
`--minutes` alone sets the length of a run; the run ends by telling the user what to do next."""

import json

from conftest import run_cli

from ganforge.config import UNTIL_CLOCK, build_config
from ganforge.recipes import choose

TINY = ["--set", "g_width=8", "--set", "d_width=8", "--set", "z_dim=16", "--set",
        "batch_size=16", "--set", "eval_n=0", "--set", "threads=1", "--no-progress"]


def test_small_colour_sets_and_large_gray_sets_get_their_own_recipes():
    small = choose(775, 64, 3, "cpu")
    assert small.overrides["variant"] == "small-data"
    assert small.overrides["augment"] and small.overrides["ema"] > 0
    # the measured CPU learning rate; the paper's on a GPU
    assert small.overrides["lr_g"] == 1e-3 and choose(775, 256, 3, "cuda").overrides[
        "lr_g"] == 2e-4
    # on a CPU a G a quarter as wide as D (measured on the sprites); on a GPU the variant's own
    assert small.overrides["g_width"] == 8 and "g_width" not in choose(775, 64, 3,
                                                                         "cuda").overrides
    # under torchrun the global batch keeps 16 images per process
    assert small.overrides["batch_size"] == 16
    assert choose(775, 64, 3, "cuda:0", world=8).overrides["batch_size"] == 128
    large = choose(60_000, 28, 1, "cpu")
    assert large.name == "fast" and not large.overrides.get("augment")
    # round 15's self-modulated G, said in the line; the gpu preset does not set it (unmeasured)
    assert large.overrides["g_selfmod"] and "self-modulated G" in large.line()
    assert choose(60_000, 28, 1, "cuda:0").name == "gpu"
    assert "self-modulated" not in choose(60_000, 28, 1, "cuda:0").line()
    # on a CPU a quick FID every 5,000 steps (every 1,000 would take 11-21 % of the clock);
    # the gpu preset keeps its own
    assert large.overrides["eval_every"] == 5000
    assert choose(60_000, 28, 1, "cuda:0").overrides["eval_every"] == 2000
    # the preset's 16-dim latent where it was measured (28 px gray); DCGAN's 100 for images it
    # was not measured on, said in the recipe's line
    assert large.overrides["z_dim"] == 16 and "latent" not in large.why
    for size, channels in ((64, 1), (32, 3), (64, 3)):
        other = choose(60_000, size, channels, "cpu")
        assert other.overrides["z_dim"] == 100 and "100-dim latent" in other.why
    assert choose(60_000, 32, 1, "cpu").overrides["z_dim"] == 16
    for r in (small, large):
        build_config([r.overrides])  # every recipe is a valid config
        assert r.line().startswith(f"recipe: {r.name} (") and "\n" not in r.line()


def test_no_variant_picks_a_recipe_says_why_and_records_it(color_folder, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "--data", str(color_folder), "--size", "32", "--out", str(run),
                "--steps", "2", "--set", "sample_every=2", *TINY, "--set", "g_width=4")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()  # the data's prepare report, then the recipe, ...
    first = next(x for x in lines if x.startswith("recipe:"))
    assert lines.index(first) <= 1 and first.startswith("recipe: small-data (")
    assert "96 colour images of 32 px" in first
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["variant"] == "small-data" and cfg["augment"] and first.endswith(
        f"({cfg['recipe'].split(' (', 1)[1]}")
    assert cfg["g_width"] == 4  # the user's --set still wins over the recipe (8)
    assert f"ganforge serve {run}" in r.stdout and f"ganforge sample {run}" in r.stdout
    # naming a variant: no recipe
    r = run_cli("train", "--data", str(color_folder), "--size", "32", "--variant", "dcgan",
                "--out", str(tmp_path / "named"), "--steps", "1", *TINY)
    assert r.returncode == 0, r.stderr
    assert "recipe:" not in r.stdout
    assert json.loads((tmp_path / "named" / "config.json").read_text())["recipe"] == ""


def test_minutes_alone_trains_on_the_clock_not_to_the_step_default(fmnist_dir, tmp_path):
    """--minutes without --steps: no step limit (the 1,000-step default would stop a long run
    early) and a progress bar in seconds toward the clock."""
    run = tmp_path / "run"
    r = run_cli("train", "--data", str(fmnist_dir), "--variant", "dcgan", "--out", str(run),
                "--minutes", "0.05", *[a for a in TINY if a != "--no-progress"])
    assert r.returncode == 0, r.stderr
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["steps"] == UNTIL_CLOCK and cfg["minutes"] == 0.05
    assert "/3 s [" in r.stderr  # the bar's total: 0.05 minutes = 3 seconds
    # with --steps too, the steps are kept
    r = run_cli("train", "--data", str(fmnist_dir), "--variant", "dcgan", "--out",
                str(tmp_path / "both"), "--minutes", "5", "--steps", "3", *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "both" / "config.json").read_text())["steps"] == 3
    assert "trained to step 3" in r.stdout


def test_lr_decay_follows_the_clock_when_minutes_end_the_run(fmnist_dir, tmp_path):
    """With --minutes alone (steps unlimited) lr_decay=1 decays the learning rate over the
    session's clock; by steps it would stay at its start for a billion steps."""
    run = tmp_path / "run"
    r = run_cli("train", "--data", str(fmnist_dir), "--variant", "dcgan", "--out", str(run),
                "--minutes", "0.1", "--set", "lr_decay=1", "--set", "log_every=2", *TINY)
    assert r.returncode == 0, r.stderr
    lrs = [json.loads(x)["lr_g"] for x in (run / "metrics.jsonl").read_text().splitlines()
           if '"train"' in x]
    assert len(lrs) >= 3
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.5 * 2e-4 < lrs[0]
