"""GAN variants, registered by name. A variant declares its networks and default config and
owns its loss math; the training loop (ganforge.train) owns everything generic."""

from __future__ import annotations

from ganforge.errors import GanforgeError
from ganforge.variants.base import Variant
from ganforge.variants.cgan import CGAN
from ganforge.variants.cyclegan import CycleGAN
from ganforge.variants.pix2pix import Pix2Pix
from ganforge.variants.smalldata import SmallData
from ganforge.variants.unconditional import DCGAN, MLPGAN, SNGAN, WGAN, WGANGP

REGISTRY: dict[str, Variant] = {v.name: v for v in (MLPGAN(), DCGAN(), WGAN(), WGANGP(), SNGAN(),
                                                    SmallData(), CGAN(), Pix2Pix(), CycleGAN())}


def get_variant(name: str) -> Variant:
    try:
        return REGISTRY[name]
    except KeyError:
        raise GanforgeError(f"unknown variant {name!r}; choose one of "
                            f"{', '.join(REGISTRY)}") from None


__all__ = ["REGISTRY", "Variant", "get_variant"]
