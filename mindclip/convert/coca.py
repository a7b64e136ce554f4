"""The CoCa family's converter: open_clip CoCa state dicts and Hub / ``local-dir`` folders
(the decoder under ``text_decoder.``, the text tower under ``text.``) <-> mindclip, both ways."""
from __future__ import annotations

from ..models.coca import CoCaConfig
from .openclip_family import OpenClipFamilyConverter


class CoCaConverter(OpenClipFamilyConverter):
    family = "coca"
    config_class = CoCaConfig
    marker_keys = ("text_decoder.",)
    example = "coca_ViT-B-32"
