"""Model families (DESIGN §1a): each module here registers one :class:`Family` — CLIP today.

Nothing is imported here on purpose: the registry imports a family's module when the family
is first looked up, so the model layer can ask for a family without importing the world.
"""
from .base import Family, family_of, get_family, split_text_inputs

__all__ = ["Family", "family_of", "get_family", "split_text_inputs"]
