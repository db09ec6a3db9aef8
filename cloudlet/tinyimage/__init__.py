"""cloudlet's tiny guest image, built from Debian packages: a cloud image small and fast enough to
boot under software emulation in tests and demos."""

from cloudlet.tinyimage.builder import build_tiny_image
from cloudlet.tinyimage.proc import TinyImageError

__all__ = ["TinyImageError", "build_tiny_image"]
