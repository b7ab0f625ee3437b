"""Text as the condition: how often a phrasing the model never saw lands on the right class.

    python bench/bench_text.py --minutes 3 --threads 1

A cgan with `condition=text` trains on Fashion-MNIST (60k images, each captioned by one of its
class's built-in training phrasings, drawn afresh each time) for a fixed wall-clock budget.
Then, for every held-out phrasing (ganforge.text.FASHION_MNIST_HELDOUT: 4 per class, none of
them trained on), 50 images are generated and labelled by the small CNN classifier of
`ganforge evaluate` (trained on the real training images, cached); the score is the share
labelled with the phrasing's class, with the prompt expressed as a mix of the training
captions (temperature 0.05, what `sample --prompt` does) and with its own embedding.
Beside it: the same for the training phrasings, for the
class index (its captions' mean embedding), and the text encoder alone (is the phrasing's
embedding nearest to its own class's captions?).

Rows are appended to docs/BENCHMARKS.md (section "Text as the condition").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from benchdoc import add_row, machine

from ganforge import evaluate_cond as ec
from ganforge import text
from ganforge.config import build_config
from ganforge.sample import load_generator
from ganforge.train import train

HEADER = "Text as the condition (bench/bench_text.py)"
INTRO = ("`python bench/bench_text.py --minutes M --threads T`: a cgan with `condition=text` "
         "(captions embedded by all-MiniLM-L6-v2, frozen) trains on Fashion-MNIST for M minutes "
         "of wall clock on the CPU (batch 64, widths 32). Held-out: 40 phrasings (4 per class) "
         "never trained on, 50 images each, labelled by the small CNN classifier of `ganforge "
         "evaluate`; the score is the share that lands on the phrasing's class, with the prompt "
         "expressed as a softmax(cos/0.05) mix of the training captions (what `sample --prompt` "
         "does) and with its own embedding. Trained: the "
         "same for the 50 training phrasings (20 images each). Class: 100 images per class from "
         "the class index. Text only: the phrasing's embedding is nearest to its own class's "
         "captions (what the encoder alone gets right). The machine is shared: the load "
         "average is given.")
COLUMNS = ["date / machine", "budget", "steps", "held-out phrasings (mix / own embedding)",
           "trained phrasings",
           "class index", "text only", "classifier on real test", "load avg"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config overrides (stated in the row)")
    ap.add_argument("--out", default=None, help="run directory (default: a temp dir)")
    ap.add_argument("--no-doc", action="store_true", help="print only; no BENCHMARKS.md row")
    args = ap.parse_args()
    from ganforge.config import parse_overrides

    torch.set_num_threads(args.threads)
    extra = parse_overrides(args.set)
    run = Path(args.out or tempfile.mkdtemp(prefix="bench-text-")) / "cgan-text"
    cfg = build_config([dict(variant="cgan", condition="text", data="fashion-mnist",
                             g_width=32, d_width=32, batch_size=64, minutes=args.minutes,
                             steps=10**6, log_every=100, sample_every=10**6,
                             threads=args.threads, seed=0), extra])
    t = time.time()
    res = train(cfg, run, progress=False)
    gen = load_generator(run, prefer="latest")
    held = ec.evaluate_prompts(gen, text.FASHION_MNIST_HELDOUT, n_per_prompt=50,
                               progress=False)
    own = ec.evaluate_prompts(gen, text.FASHION_MNIST_HELDOUT, n_per_prompt=50, temperature=0,
                              progress=False)
    trained = ec.evaluate_prompts(gen, text.FASHION_MNIST_CAPTIONS, n_per_prompt=20,
                                  progress=False)
    cls = ec.evaluate_conditional(gen, n_per_class=100, fid=False, progress=False)
    load = f"{os.getloadavg()[0]:.1f}"
    print(ec.format_prompts(held))
    print(json.dumps({"steps": res.step, "heldout": held["acc"], "heldout_own": own["acc"],
                      "trained": trained["acc"],
                      "class": cls["acc_generated"], "text_only": held["text_only_acc"],
                      "diversity": cls["diversity_ratio"], "s": round(time.time() - t)}))
    if args.no_doc:
        return
    budget = f"{args.minutes:g} min, {args.threads} threads" + (
        "; " + ", ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
    add_row(HEADER, INTRO, COLUMNS, [
        machine(), budget, str(res.step), f"{held['acc']:.3f} / {own['acc']:.3f} (40 x 50)",
        f"{trained['acc']:.3f} (50 x 20)", f"{cls['acc_generated']:.3f} (10 x 100)",
        f"{held['text_only_acc']:.3f}", f"{held['acc_real']:.3f} (10k)", load])


if __name__ == "__main__":
    main()
