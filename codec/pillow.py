"""Pillow plugin: after ``import vaezip``, ``Image.open("x.vz")`` and ``im.save("x.vz")`` work; an archive opens as a
multi-frame image (``n_frames``, ``seek``). The whole file is decoded at the first ``load``."""
from __future__ import annotations

from PIL import Image, ImageFile

MAGIC = b"VAEZ"


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == MAGIC


class VzImageFile(ImageFile.ImageFile):
    format = "VZ"
    format_description = "vaezip learned lossless image"

    def _open(self) -> None:
        from .format.container import FormatError, unpack
        self._data = self.fp.read()
        try:
            self._header, _ = unpack(self._data)
        except FormatError as e:
            raise SyntaxError(str(e)) from None
        self._pictures = None
        self.n_frames = len(self._header.images)
        self.is_animated = self.n_frames > 1
        self._frame = 0
        self._describe()

    def _describe(self) -> None:
        rec = self._header.images[self._frame]
        self._mode = {"1": "1", "P": "P", "I;16": "I;16"}.get(rec.mode, rec.mode.split(";")[0])
        self._size = (rec.width, rec.height)
        self.info = {"icc_profile": rec.icc} if rec.icc else {}
        self.tile = []

    def seek(self, frame: int) -> None:
        if not self._seek_check(frame):
            return
        self._frame = frame
        self._im = None
        self._describe()

    def tell(self) -> int:
        return self._frame

    def load(self):
        if self._im is None:
            from .api import decompress
            from .format.image import to_pil
            if self._pictures is None:
                self._pictures = decompress(self._data, pictures=True)
            im = to_pil(self._pictures[self._frame])
            im.load()
            self.im, self._mode, self.info = im.im, im.mode, im.info
            self.palette = im.palette
        return super().load()


def _save(im: Image.Image, fp, filename, save_all: bool = False) -> None:
    from .api import compress
    frames = [im]
    if save_all:
        frames = [frame.copy() for frame in _frames(im)] + list(im.encoderinfo.get("append_images", []))
    options = {k: im.encoderinfo[k] for k in ("model", "tile", "batch", "particles", "classical", "effort", "strip")
               if k in im.encoderinfo}
    fp.write(compress(frames[0] if len(frames) == 1 else frames, **options))


def _frames(im: Image.Image):
    for i in range(getattr(im, "n_frames", 1)):
        im.seek(i)
        yield im


def _save_all(im, fp, filename) -> None:
    _save(im, fp, filename, save_all=True)


Image.register_open(VzImageFile.format, VzImageFile, _accept)
Image.register_save(VzImageFile.format, _save)
Image.register_save_all(VzImageFile.format, _save_all)
Image.register_extension(VzImageFile.format, ".vz")
Image.register_mime(VzImageFile.format, "image/x-vaezip")
