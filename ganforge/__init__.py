"""ganforge: train GANs on your own images, measure them honestly, explore them in the browser."""

__version__ = "0.1.0"
