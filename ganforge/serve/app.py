"""The explorer's web app: a static page plus a small JSON/PNG API over one generator.

FastAPI (on Starlette, served by uvicorn) because it is ASGI, so many slow image requests
can wait on one event loop while the model works on its own thread, and because its request
models give pydantic validation and an OpenAPI schema (/openapi.json) for free.
"""

import asyncio
import contextlib
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ganforge.data import _decode
from ganforge.sample import LoadedGenerator, gif_bytes, load_generator, make_grid, png_bytes, slerp
from ganforge.serve import directions as dirs
from ganforge.serve import runinfo
from ganforge.serve import schemas as S
from ganforge.serve.batching import MicroBatcher, ModelRunner, microbatch_from_env
from ganforge.serve.errors import BodySizeLimit, install_error_handlers

STATIC = Path(__file__).parent / "static"
PNG = {200: {"content": {"image/png": {}}, "description": "a PNG image"}}
GIF = {200: {"content": {"image/gif": {}, "image/png": {}},
             "description": "an animated GIF (or a PNG strip with format=png)"}}
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": S.ErrorResponse, "description": why}
    for code, why in ((400, "a request the model cannot serve"), (404, "no such resource"),
                      (413, "request body too large"), (422, "invalid request"))}


class Explorer:
    """Everything the routes share: the generator, its model thread, the batcher."""

    def __init__(self, gen: LoadedGenerator, microbatch: bool):
        self.gen = gen
        self.runner = ModelRunner(gen)
        self.batcher = MicroBatcher(self.runner, enabled=microbatch)
        self.run_dir = runinfo.run_dir_of(gen.path)
        self.kind = gen.kind
        self._directions: dirs.Directions | None = None

    def _load_directions(self) -> dirs.Directions:
        # Runs on the single model thread, so two requests never compute them twice.
        if self._directions is None:
            self._directions = dirs.load_or_compute(self.gen)
        return self._directions

    async def directions(self) -> dirs.Directions:
        return await self.runner.run(self._load_directions)

    def latent(self, end: int | list[float]) -> torch.Tensor:
        if isinstance(end, int):
            return self.gen.latents(1, end)[0]
        return torch.tensor(end, dtype=torch.float32)

    def classes(self, n: int, c: int | None) -> torch.Tensor | None:
        """n copies of class c for a conditional model (class 0 when none is named)."""
        if self.kind != "conditional":
            return None
        return torch.full((n,), c or 0, dtype=torch.long)

    def grid_png(self, seeds: list[int], truncation: float, nrow: int | None,
                 c: int | None = None) -> bytes:
        z = torch.stack([self.gen.latents(1, s)[0] for s in seeds])  # [N, z_dim]
        images = self.gen.generate(z, truncation, c=self.classes(len(seeds), c))
        return png_bytes(make_grid(images, nrow))

    def walk(self, a: torch.Tensor, b: torch.Tensor, frames: int, truncation: float,
             spherical: bool, fmt: str, c: int | None = None) -> bytes:
        t = torch.linspace(0, 1, frames)
        # slerp is undefined at the origin (e.g. after "reset"): walk in a straight line there
        use_slerp = spherical and min(float(a.norm()), float(b.norm())) > 1e-6
        z = slerp(a, b, t) if use_slerp else torch.lerp(a, b, t[:, None])
        images = self.gen.generate(z, truncation, c=self.classes(frames, c))
        if fmt == "png":
            return png_bytes(make_grid(images, nrow=frames))
        return gif_bytes(images, upscale=max(1, 128 // self.gen.size))


def default_threads() -> int:
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1, 4))


def create_app(ckpt_or_run: str | Path, device: str = "cpu", *,
               microbatch: bool | None = None, threads: int | None = None) -> FastAPI:
    """The explorer app for a checkpoint file or run directory (its best, else latest).

    `microbatch` None reads GANFORGE_SERVE_MICROBATCH (default on). `threads` is torch's
    intra-op thread count for the model thread; None means torch's default less one core
    (left to the event loop, which parses requests and encodes PNGs), at most 4: small
    batches gain little from more, and on a busy machine extra threads only spin.
    """
    gen = load_generator(ckpt_or_run, device=device)
    torch.set_num_threads(threads or default_threads())
    ex = Explorer(gen, microbatch_from_env() if microbatch is None else microbatch)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # ready by the time the page asks (translation models have no latent directions)
        warm = asyncio.create_task(ex.directions()) if ex.kind != "translation" else None
        yield
        if warm is not None:
            warm.cancel()
        await ex.batcher.close()

    app = FastAPI(title="ganforge explorer", version="1", lifespan=lifespan,
                  description="Explore a trained ganforge generator and watch its run.")
    app.state.explorer = ex
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=S.MAX_BODY_BYTES,
                       per_path={"/api/translate": S.MAX_UPLOAD_BYTES})
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    models = S.request_models(gen.z_dim, len(gen.classes))
    ImageRequest, GridRequest, InterpolateRequest = models.image, models.grid, models.interpolate
    TruncationQ = Annotated[float, Query(gt=0, le=1, allow_inf_nan=False,
                                         description="psi in (0, 1]")]
    ClassQ: Any = Annotated[int | None, Query(ge=0, le=len(gen.classes) - 1,
                                              description="the class index")]
    if not gen.classes:  # an unconditional model takes no class
        ClassQ = Annotated[None, Query(description="unconditional model: no class")]

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/info", response_model=S.InfoResponse, summary="what is being served")
    async def info() -> S.InfoResponse:
        return S.InfoResponse(
            kind=ex.kind, classes=gen.classes, directions=list(gen.directions),
            z_dim=gen.z_dim, size=gen.size, channels=gen.channels,
            variant=gen.config.variant, step=gen.step, ema=gen.ema, checkpoint=gen.path.name,
            run=ex.run_dir.name if ex.run_dir else None, microbatch=ex.batcher.enabled,
            batching=ex.batcher.stats(), limits=S.Limits())

    @app.get("/api/latent", response_model=S.LatentResponse, responses=ERRORS,
             summary="the latent vector of a seed (as `ganforge sample --seed`)")
    async def latent(seed: Annotated[int, Query(ge=0, le=S.MAX_SEED)]) -> S.LatentResponse:
        return S.LatentResponse(seed=seed, z=gen.latents(1, seed)[0].tolist())

    @app.post("/api/image", response_class=Response, responses={**PNG, **ERRORS},
              summary="one image from a latent vector")
    async def image(req: ImageRequest) -> Response:  # type: ignore[valid-type]
        t0 = time.perf_counter()
        z = torch.tensor(req.z, dtype=torch.float32) * req.truncation  # [z_dim]
        png = await ex.batcher.image(z, req.c)
        # the time spent in the server after parsing: queue, forward pass and PNG encoding
        timing = f"generate;dur={1000 * (time.perf_counter() - t0):.1f}"
        return Response(png, media_type="image/png", headers={"Server-Timing": timing})

    @app.get("/api/grid", response_class=Response, responses={**PNG, **ERRORS},
             summary="a grid of images for seeds like 0,3,5-9")
    async def grid_get(seeds: Annotated[str, Query(max_length=700, pattern=S.SEEDS_PATTERN)],
                       truncation: TruncationQ = 1.0,
                       nrow: Annotated[int | None, Query(ge=1, le=S.MAX_GRID)] = None,
                       c: ClassQ = None) -> Response:
        try:
            seed_list = S.parse_seeds(seeds)
        except ValueError as e:
            raise HTTPException(422, f"seeds: {e}") from None
        png = await ex.runner.run(ex.grid_png, seed_list, truncation, nrow, c)
        return Response(png, media_type="image/png")

    @app.post("/api/grid", response_class=Response, responses={**PNG, **ERRORS},
              summary="a grid of images for a list of seeds")
    async def grid_post(req: GridRequest) -> Response:  # type: ignore[valid-type]
        png = await ex.runner.run(ex.grid_png, req.seeds, req.truncation, req.nrow, req.c)
        return Response(png, media_type="image/png")

    @app.get("/api/interpolate", response_class=Response, responses={**GIF, **ERRORS},
             summary="an animated walk between the latents of two seeds")
    async def interpolate_get(
            a: Annotated[int, Query(ge=0, le=S.MAX_SEED)],
            b: Annotated[int, Query(ge=0, le=S.MAX_SEED)],
            frames: Annotated[int, Query(ge=2, le=S.MAX_FRAMES)] = 16,
            truncation: TruncationQ = 1.0, spherical: bool = True,
            format: Annotated[str, Query(pattern="^(gif|png)$")] = "gif",
            c: ClassQ = None) -> Response:
        data = await ex.runner.run(ex.walk, ex.latent(a), ex.latent(b), frames, truncation,
                                   spherical, format, c)
        return Response(data, media_type=f"image/{format}")

    @app.post("/api/interpolate", response_class=Response, responses={**GIF, **ERRORS},
              summary="an animated walk between two seeds or latent vectors")
    async def interpolate_post(req: InterpolateRequest) -> Response:  # type: ignore[valid-type]
        data = await ex.runner.run(ex.walk, ex.latent(req.a), ex.latent(req.b), req.frames,
                                   req.truncation, req.spherical, req.format, req.c)
        return Response(data, media_type=f"image/{req.format}")

    @app.post("/api/translate", response_class=Response, responses={**PNG, **ERRORS},
              summary="translate an uploaded image (the request body: PNG/JPEG/... bytes)")
    async def translate(request: Request,
                        direction: Annotated[str, Query(pattern="^(a2b|b2a)$")] = "a2b"
                        ) -> Response:
        if ex.kind != "translation":
            raise HTTPException(400, f"{gen.config.variant} is not an image-to-image model")
        if direction not in gen.directions:
            raise HTTPException(400, f"direction {direction} is not available for "
                                f"{gen.config.variant}; use {' or '.join(gen.directions)}")
        body = await request.body()
        if not body:
            raise HTTPException(400, "send the image file as the request body")
        try:
            image = _decode(io.BytesIO(body), gen.channels, gen.size, 1.0)
        except ValueError as e:
            raise HTTPException(400, f"cannot use the uploaded image: {e}") from None
        out = await ex.runner.run(gen.translate, image[None], direction)
        return Response(png_bytes(out[0]), media_type="image/png")

    @app.get("/api/directions", response_model=S.DirectionsResponse,
             summary="GANSpace-style latent directions (unit vectors in z)")
    async def directions() -> dict[str, Any]:
        return (await ex.directions()).to_json()

    @app.get("/api/run/metrics", response_model=S.MetricsResponse,
             summary="the run's train and eval records, best step, and whether it is training")
    def run_metrics() -> dict[str, Any]:
        if ex.run_dir is None:
            return {"available": False}
        return runinfo.metrics(ex.run_dir)

    @app.get("/api/run/grids", response_model=S.GridsResponse,
             summary="the steps that have a fixed-latent sample grid")
    def run_grids() -> S.GridsResponse:
        if ex.run_dir is None:
            return S.GridsResponse(available=False, steps=[])
        return S.GridsResponse(available=True, steps=runinfo.grid_steps(ex.run_dir))

    @app.get("/api/run/grid/{step}", response_class=Response,
             responses={**PNG, **ERRORS}, summary="the sample grid written at a step")
    def run_grid(step: Annotated[int, PathParam(ge=0, le=999_999_999)]) -> Response:
        if ex.run_dir is None:
            raise HTTPException(404, "this checkpoint is not inside a run directory")
        png = runinfo.grid_png(ex.run_dir, step)
        if png is None:
            raise HTTPException(404, f"no sample grid at step {step}")
        return Response(png, media_type="image/png")

    return app
