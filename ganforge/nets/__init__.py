"""Networks. They know nothing about losses: a generator maps z [N, z_dim] to images
[N, C, H, W] in [-1, 1]; a discriminator maps images to one logit/score per image [N]."""

from ganforge.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from ganforge.nets.mlp import MLPDiscriminator, MLPGenerator
from ganforge.nets.smalldata import SmallDataDiscriminator, SmallDataGenerator

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "MLPDiscriminator", "MLPGenerator",
           "SmallDataDiscriminator", "SmallDataGenerator"]
