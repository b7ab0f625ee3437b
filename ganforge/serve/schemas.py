"""Request and response models of the explorer's API, and the limits they enforce.

The request models are built per generator (`request_models(z_dim)`), so the exact latent
length appears in the OpenAPI schema and a wrong length is rejected by validation. Every
number must be finite: Python's JSON parser accepts `NaN` and `Infinity` tokens, pydantic is
told not to.
"""

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ABS_Z = 1000.0  # beyond this a latent is certainly a mistake (the prior is N(0, 1))
MAX_SEED = 2**32 - 1
MAX_GRID = 64  # images per grid request
MAX_FRAMES = 64  # frames per interpolation
MAX_BODY_BYTES = 64 * 1024  # request bodies, checked before any parsing
MAX_UPLOAD_BYTES = 8 * 1024 * 1024  # an image uploaded to /api/translate
SEEDS_PATTERN = r"^\d{1,10}(-\d{1,10})?(,\d{1,10}(-\d{1,10})?){0,63}$"

Truncation = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False,
                                    description="psi in (0, 1]: z is scaled by it before G")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="a latent seed, as in "
                            "`ganforge sample --seed`")]
ZValue = Annotated[float, Field(ge=-MAX_ABS_Z, le=MAX_ABS_Z, allow_inf_nan=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a no-op


@dataclass
class RequestModels:
    image: type[BaseModel]
    grid: type[BaseModel]
    interpolate: type[BaseModel]


def request_models(z_dim: int, n_classes: int = 0) -> RequestModels:
    ClassIndex: Any = Annotated[int | None, Field(ge=0, le=n_classes - 1,
                                                  description="the class index")]
    if not n_classes:  # an unconditional model takes no class: only null
        ClassIndex = Annotated[None, Field(description="unconditional model: no class")]
    Latent = Annotated[list[ZValue], Field(min_length=z_dim, max_length=z_dim,
                                           description=f"a latent vector of {z_dim} values")]

    class ImageRequest(Strict):
        """One image from one latent vector."""

        z: Latent
        truncation: Truncation = 1.0
        c: ClassIndex = None

    class GridRequest(Strict):
        """A grid of images, one per seed (the tile of seed s is the image of seed s)."""

        seeds: Annotated[list[Seed], Field(min_length=1, max_length=MAX_GRID)]
        truncation: Truncation = 1.0
        nrow: Annotated[int | None, Field(ge=1, le=MAX_GRID)] = None
        c: ClassIndex = None

    class InterpolateRequest(Strict):
        """A walk between two ends, each a seed or a latent vector."""

        a: Seed | Latent
        b: Seed | Latent
        frames: Annotated[int, Field(ge=2, le=MAX_FRAMES)] = 16
        truncation: Truncation = 1.0
        spherical: bool = True
        format: Literal["gif", "png"] = "gif"
        c: ClassIndex = None

    return RequestModels(ImageRequest, GridRequest, InterpolateRequest)


def parse_seeds(text: str) -> list[int]:
    """"0,3,5-9" -> [0, 3, 5, 6, 7, 8, 9]; ValueError with the reason otherwise."""
    if not re.fullmatch(SEEDS_PATTERN, text):
        raise ValueError("seeds must look like 0,3,5-9 (seeds and inclusive ranges)")
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"seed range {part} is backwards")
        if max(a, b) > MAX_SEED:
            raise ValueError(f"seeds must be at most {MAX_SEED}")
        if len(out) + b - a + 1 > MAX_GRID:
            raise ValueError(f"too many seeds: at most {MAX_GRID} images per grid")
        out.extend(range(a, b + 1))
    return out


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong with the request")
    detail: list[dict[str, Any]] | None = None


class Limits(BaseModel):
    max_abs_z: float = MAX_ABS_Z
    max_seed: int = MAX_SEED
    max_grid: int = MAX_GRID
    max_frames: int = MAX_FRAMES
    max_body_bytes: int = MAX_BODY_BYTES
    max_upload_bytes: int = MAX_UPLOAD_BYTES


class InfoResponse(BaseModel):
    kind: Literal["unconditional", "conditional", "translation"]
    classes: list[str]
    directions: list[str] = Field(default=[], description="translation models: a2b, b2a")
    z_dim: int
    size: int
    channels: int
    variant: str
    step: int
    ema: bool
    checkpoint: str
    run: str | None = Field(description="the run directory's name, when the checkpoint is in one")
    microbatch: bool
    batching: dict[str, float] = Field(description="forward passes run for single-image "
                                       "requests so far, and their mean and largest batch")
    limits: Limits


class LatentResponse(BaseModel):
    seed: int
    z: list[float]


class DirectionsResponse(BaseModel):
    layer: str
    samples: int
    directions: list[dict[str, Any]]


class GridsResponse(BaseModel):
    available: bool
    steps: list[int]


class MetricsResponse(BaseModel):
    available: bool
    train: list[dict[str, Any]] = []
    eval: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = Field(default=[], description="health monitor records")
    score_keys: list[str] = []
    best: dict[str, Any] | None = None
    training: bool = False
