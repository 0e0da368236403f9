"""vaezip: learned lossless image compression (bits-back ANS coding with a small integer VAE).

    import vaezip
    data = vaezip.compress(image)            # a PIL image or uint8/uint16 array -> .vz bytes; a list -> archive
    images = vaezip.decompress(data)         # list of PIL images (arrays=True: NumPy arrays)

After ``import vaezip``, Pillow reads and writes .vz files: ``Image.open("x.vz")``, ``im.save("x.vz")``.
"""
from . import pillow as _pillow  # noqa: F401  (registers the plugin)
from .api import compress, decompress

__all__ = ["compress", "decompress"]
