"""Errors of the model layer that other layers catch by type."""


class MissingTowerError(ValueError):
    """An open_clip architecture whose tower mindclip does not build yet (a timm image tower,
    CoCa's decoder, a Hugging Face text model of an unimplemented type)."""
