"""`ganforge evaluate` for conditional and translation models (the kind is read from the
checkpoint).

* conditional: a small CNN trained on the real labelled training images (cached per dataset
  hash) labels `n_per_class` generated images of every class; its accuracy on them is shown
  beside its accuracy on real held-out images (the test split of a built-in dataset, else the
  last 10% of the labelled set, which the classifier then never sees). Within-class
  diversity: the mean pairwise distance of the generated images of a class over that of as many
  real held-out images of the class (1 = as varied as the real ones; near 0 = G ignores z and
  draws one image per class). Plus FID per class (n generated images of class k vs n real
  held-out images of class k), with the counts stated.
* translation: held-out inputs are translated and compared with the target domain by FID;
  pix2pix, which has true targets, also by L1 (mean absolute error, pixel values in [0, 1])
  and PSNR (dB, peak 255).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganforge import data, data_cond
from ganforge.errors import GanforgeError
from ganforge.sample import LoadedGenerator


def _fid(fake: np.ndarray, real: np.ndarray, key: str, split: str, extractor: Any) -> float:
    from ganforge.metrics import evaluate_images
    from ganforge.metrics.api import metric_name

    res = evaluate_images(fake, real, metrics=("fid",), real_key=key, split=split,
                          extractor=extractor, progress=False)
    return float(res[metric_name("fid", len(fake), split)])


def within_class_diversity(fakes: list[np.ndarray], x_real: np.ndarray,
                           y_real: np.ndarray) -> list[float]:
    """Per class k: diversity(generated of class k) / diversity(as many real images of class
    k), both the mean pairwise L2 distance of 16x16-pooled images (ganforge.health)."""
    from ganforge.health import diversity

    def div(images: np.ndarray) -> float:
        return diversity(torch.from_numpy(np.asarray(images)).permute(0, 3, 1, 2).float()
                         / 127.5 - 1)

    out = []
    for c, fake in enumerate(fakes):
        real = x_real[y_real == c][:len(fake)]
        out.append(div(fake) / max(div(real), 1e-8) if len(real) >= 2 else float("nan"))
    return out


def _labelled_split(gen: LoadedGenerator, ref: str | None
                    ) -> tuple[np.ndarray, np.ndarray, str, np.ndarray, np.ndarray, str]:
    """(train images, labels, train key, test images, labels, test split name)."""
    train = data_cond.resolve_labelled(gen.config.data, size=gen.size, channels=gen.channels,
                                       progress=False)
    if list(train.meta["classes"]) != gen.classes:
        raise GanforgeError(f"the data {gen.config.data} now has classes "
                            f"{train.meta['classes']}, not the model's {gen.classes}")
    ref = ref or data_cond.heldout_split(gen.config.data)
    x, y = np.asarray(train.images), np.asarray(train.labels)
    if ref is None:  # hold out the last 10% of a shuffled order
        order = np.random.default_rng(0).permutation(len(x))
        cut = int(len(x) * 0.9)
        tr, te = np.sort(order[:cut]), np.sort(order[cut:])
        return x[tr], y[tr], f"{train.key}-90pct", x[te], y[te], "heldout10pct"
    test = data_cond.resolve_labelled(ref, size=gen.size, channels=gen.channels,
                                      progress=False)
    if list(test.meta["classes"]) != gen.classes:
        raise GanforgeError(f"--ref {ref} has classes {test.meta['classes']}, not the "
                            f"model's {gen.classes}")
    return x, y, train.key, np.asarray(test.images), np.asarray(test.labels), test.split


def evaluate_conditional(gen: LoadedGenerator, *, ref: str | None = None,
                         n_per_class: int = 100, fid: bool = True, seed: int = 0,
                         truncation: float = 1.0, device: str = "cpu",
                         classifier_epochs: int = 2, progress: bool = True) -> dict[str, Any]:
    from ganforge.classifier import accuracy, cached_classifier, predict

    if not 2 <= n_per_class <= 10_000:
        raise GanforgeError(f"--n (per class) must be between 2 and 10,000, got {n_per_class}")
    x, y, key, x_test, y_test, split = _labelled_split(gen, ref)
    k = len(gen.classes)
    clf, info = cached_classifier(key, x, y, k, epochs=classifier_epochs, progress=progress)
    results: dict[str, Any] = {
        "kind": "conditional", "classes": gen.classes, "n_per_class": n_per_class,
        "classifier": {"n_train": int(len(x)), "epochs": classifier_epochs,
                       "cached": info["cached"]},
        "acc_real": accuracy(clf, x_test, y_test), "n_real_test": int(len(x_test)),
        "real_split": split}
    fakes = []
    for c in range(k):
        z = gen.latents(n_per_class, seed + 1000 * c)
        fakes.append(gen.generate(z, truncation, c=torch.full((n_per_class,), c)))
    pred = [predict(clf, f) for f in fakes]
    per_class = [float((p == c).mean()) for c, p in enumerate(pred)]
    results.update(acc_generated=float(np.mean(per_class)), acc_generated_per_class=per_class)
    div = within_class_diversity(fakes, x_test, y_test)
    results.update(diversity_ratio=float(np.nanmean(div)) if len(div) else float("nan"),
                   diversity_ratio_per_class=div)
    if fid:
        from ganforge.metrics import FeatureExtractor

        ex = FeatureExtractor(device=device, progress=False)
        fids = []
        for c in range(k):
            real_c = x_test[y_test == c][:n_per_class]  # as many real as generated
            if len(real_c) < 2:
                raise GanforgeError(f"class {gen.classes[c]!r} has {len(real_c)} real "
                                    f"{split} images; per-class FID needs at least 2")
            fids.append(_fid(fakes[c], real_c, f"{key}-{split}-class{c}-{len(real_c)}", split,
                             ex))
        results.update(fid_per_class=fids, fid_class_mean=float(np.mean(fids)),
                       fid_real_per_class=[int(min((y_test == c).sum(), n_per_class))
                                           for c in range(k)])
    return results


def evaluate_prompts(gen: LoadedGenerator, prompts: dict[str, list[str]], *,
                     n_per_prompt: int = 50, seed: int = 0, truncation: float = 1.0,
                     temperature: float | None = None, classifier_epochs: int = 2,
                     progress: bool = True) -> dict[str, Any]:
    """How often a text prompt lands on the class it describes: for every prompt of class k
    (`prompts`: class name -> phrasings), `n_per_prompt` images are generated and labelled by
    the cached classifier of `evaluate_conditional`; the score is the share labelled k. Beside
    it, `text_only_acc`: how often the prompt's embedding is nearest (cosine) to class k's
    mean caption embedding, the most the text encoder alone gets right. `temperature`: see
    LoadedGenerator.prompt_embedding (0 = the prompts' own embeddings)."""
    from ganforge import text
    from ganforge.classifier import accuracy, cached_classifier, predict

    if not gen.text_dim:
        raise GanforgeError(f"{gen.path} is not conditioned on text (condition=text)")
    if not 1 <= n_per_prompt <= 10_000:
        raise GanforgeError(f"n_per_prompt must be between 1 and 10,000, got {n_per_prompt}")
    unknown = sorted(set(prompts) - set(gen.classes))
    if unknown:
        raise GanforgeError(f"prompts for unknown class(es) {', '.join(unknown)}; the model's "
                            f"classes are {', '.join(gen.classes)}")
    x, y, key, x_test, y_test, split = _labelled_split(gen, None)
    clf, info = cached_classifier(key, x, y, len(gen.classes), epochs=classifier_epochs,
                                  progress=progress)
    class_text = gen.G.class_text.detach().cpu()  # [K, text_dim]
    rows = []
    for i, (name, phrases) in enumerate(prompts.items()):
        k = gen.classes.index(name)
        for j, phrase in enumerate(phrases):
            e = gen.prompt_embedding(phrase, temperature)  # [1, text_dim]
            raw = text.embed([phrase], gen.config.text_model)
            z = gen.latents(n_per_prompt, seed + 1000 * i + j)
            images = gen.generate(z, truncation, c=e.expand(n_per_prompt, -1))
            pred = predict(clf, images)
            rows.append({"prompt": phrase, "class": name, "acc": float((pred == k).mean()),
                         "top_class": gen.classes[int(np.bincount(pred).argmax())],
                         "text_nearest": gen.classes[int((raw @ class_text.T).argmax())]})
    return {"kind": "prompts", "n_prompts": len(rows), "n_per_prompt": n_per_prompt,
            "temperature": text.PROMPT_TEMPERATURE if temperature is None else temperature,
            "acc": float(np.mean([r["acc"] for r in rows])) if rows else float("nan"),
            "text_only_acc": float(np.mean([r["text_nearest"] == r["class"] for r in rows]))
            if rows else float("nan"),
            "acc_real": accuracy(clf, x_test, y_test), "real_split": split,
            "classifier": {"n_train": int(len(x)), "epochs": classifier_epochs,
                           "cached": info["cached"]},
            "per_prompt": rows}


def format_prompts(r: dict[str, Any]) -> str:
    lines = [f"prompts landing on their class: {r['acc']:.3f} ({r['n_prompts']} prompts x "
             f"{r['n_per_prompt']} images, labelled by the classifier; its accuracy on real "
             f"{r['real_split']} images: {r['acc_real']:.3f}; prompt temperature "
             f"{r['temperature']:g})",
             f"text encoder alone (prompt nearest to its class's captions): "
             f"{r['text_only_acc']:.3f}"]
    for row in r["per_prompt"]:
        lines.append(f"  {row['prompt']!r:>34s} ({row['class']}): {row['acc']:.2f}, mostly "
                     f"{row['top_class']}")
    return "\n".join(lines)


def evaluate_translation(gen: LoadedGenerator, *, ref: str | None = None, n: int = 500,
                         direction: str = "a2b", device: str = "cpu",
                         progress: bool = True) -> dict[str, Any]:
    from ganforge.metrics import FeatureExtractor

    if not 2 <= n <= 50_000:
        raise GanforgeError(f"--n must be between 2 and 50,000, got {n}")
    if direction not in gen.directions:
        raise GanforgeError(f"direction {direction} is not available for "
                            f"{gen.config.variant}; use {' or '.join(gen.directions)}")
    ex = FeatureExtractor(device=device, progress=progress)
    out: dict[str, Any] = {"kind": "translation", "direction": direction}
    if gen.config.variant == "pix2pix":
        source = ref or data_cond.heldout_split(gen.config.data) or gen.config.data
        pairs = data_cond.resolve_paired(source, size=gen.size, channels=gen.channels,
                                         progress=False)
        a, b = np.asarray(pairs.a.images[:n]), np.asarray(pairs.b.images[:n])
        fake = gen.translate(a, "a2b")
        diff = fake.astype(np.float64) - b.astype(np.float64)
        mse = (diff ** 2).reshape(len(b), -1).mean(1)
        psnr = 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))
        out.update(l1=float(np.abs(diff).mean() / 255.0), psnr=float(psnr.mean()),
                   reference=str(pairs.meta["source"]), split=pairs.meta["split"])
        target, key, split = b, f"{pairs.b.key}-first{len(b)}", pairs.meta["split"]
    else:
        src, dst = (gen.config.data, gen.config.data_b)
        if direction == "b2a":
            src, dst = dst, src
        inputs = data.resolve(ref or src, size=gen.size, channels=gen.channels, progress=False)
        target_ds = data.resolve(dst, size=gen.size, channels=gen.channels, progress=False)
        fake = gen.translate(np.asarray(inputs.images[:n]), direction)
        target = np.asarray(target_ds.images[:n])
        key, split = f"{target_ds.key}-first{len(target)}", target_ds.split
        out.update(reference=str(target_ds.meta["source"]), split=split)
    out.update(n_translated=int(len(fake)), n_target=int(len(target)),
               fid=_fid(fake, target, key, split, ex))
    return out


def format_conditional(r: dict[str, Any]) -> str:
    lines = [f"classifier accuracy on generated images: {r['acc_generated']:.3f} "
             f"({r['n_per_class']} per class x {len(r['classes'])} classes)",
             f"classifier accuracy on real images:      {r['acc_real']:.3f} "
             f"({r['n_real_test']} {r['real_split']} images; the ceiling)",
             f"within-class diversity, generated / real: {r['diversity_ratio']:.3f} "
             "(1 = as varied as real images of the class; near 0 = one image per class)"]
    for name, acc, div, fid in zip(r["classes"], r["acc_generated_per_class"],
                                   r["diversity_ratio_per_class"],
                                   r.get("fid_per_class", [None] * len(r["classes"])),
                                   strict=True):
        extra = f"  FID {fid:7.2f}" if fid is not None else ""
        lines.append(f"  {name:>14s}: accuracy {acc:.3f}  diversity {div:.3f}{extra}")
    if "fid_class_mean" in r:
        lines.append(f"per-class FID, mean: {r['fid_class_mean']:.2f} ({r['n_per_class']} "
                     f"generated vs up to {r['n_per_class']} real {r['real_split']} images of "
                     "the class; small n inflates FID)")
    return "\n".join(lines)


def format_translation(r: dict[str, Any]) -> str:
    lines = [f"FID of {r['n_translated']} translations ({r['direction']}) vs "
             f"{r['n_target']} target-domain images ({r['split']}): {r['fid']:.2f}"]
    if "l1" in r:
        lines.append(f"L1 to the true targets: {r['l1']:.4f} (pixels in [0, 1]); "
                     f"PSNR {r['psnr']:.2f} dB")
    return "\n".join(lines)
