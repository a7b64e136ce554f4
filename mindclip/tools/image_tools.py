"""``load_image(path | URL)`` as MindFormers offers it (``mindformers.tools.image_tools``)."""
from __future__ import annotations

import io
import os
import urllib.error
import urllib.request

URL_SCHEMES = ("http://", "https://")


def load_image(image: str, timeout: float = 20.0):
    """An RGB ``PIL.Image`` from a local path or an http(s) URL.

    A URL is fetched with the standard library; without network access the error says so
    (download the file and pass its path instead).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, str) and image.startswith(URL_SCHEMES):
        try:
            with urllib.request.urlopen(image, timeout=timeout) as response:  # noqa: S310 (http/https only)
                data = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"cannot fetch {image}: {getattr(exc, 'reason', exc)}. Without "
                                  "network access, download the image elsewhere and pass its "
                                  "local path") from None
        source, where = io.BytesIO(data), image
    else:
        if not os.path.isfile(image):
            raise FileNotFoundError(f"image not found: {image}")
        source, where = image, image
    try:
        with Image.open(source) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{where} is not a readable image: {exc}") from None
