"""mvgen: a declarative, Hydra-driven music-video renderer.

Heavy libraries (torch, diffusers, transformers, stable-ts) are imported inside the backends that
need them, never at package import, so `mvgen --help` stays fast.
"""

__version__ = "0.1.0"
