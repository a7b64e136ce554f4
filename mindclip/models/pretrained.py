"""Hugging Face's and MindFormers' front doors on every model and config class:
``Model.from_pretrained(name | folder | file)``, ``model.save_pretrained(folder)``,
``Model.show_support_list()`` and ``Config.from_pretrained(name | folder)``. A folder written
by ``save_pretrained`` (weights + ``config.json`` + tokenizer files) is accepted by every front
door; a name means the weights installed in the local weight store (never random ones)."""
from __future__ import annotations

import os
from typing import Any, List


def _is_path(name_or_path: str) -> bool:
    from .factory import _is_path as is_path

    return is_path(name_or_path)


class PretrainedModelMixin:
    """Mixed into each family's model class (which sets ``family``)."""

    family: str = ""

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> Any:
        """A model from a ``save_pretrained`` folder, a converted file, or a name whose
        weights are installed in ``$MINDCLIP_HOME`` (an error says how to install them)."""
        from .factory import create_model

        if _is_path(name_or_path):
            model = create_model(pretrained=name_or_path)
        else:
            model = create_model(name_or_path, pretrained=True)
        if not isinstance(model, cls):
            raise ValueError(f"{name_or_path} holds a {type(model).__name__} "
                             f"({model.family} family), not a {cls.__name__}")
        return model

    def save_pretrained(self, folder: str) -> str:
        """Write ``mindclip_model.safetensors`` + ``config.json`` (+ tokenizer files) into
        ``folder``; ``from_pretrained(folder)`` restores the model bit for bit."""
        from ..families.base import family_of
        from .factory import get_tokenizer, write_pretrained

        tensors = {k: p.asnumpy() for k, p in self.parameters_dict().items()}
        write_pretrained(folder, tensors, family_of(self), self.config,
                         tokenizer=get_tokenizer(self))
        return folder

    @classmethod
    def show_support_list(cls) -> List[str]:
        """Prints (MindFormers' format) and returns the names this class loads: MindFormers'
        names first, then every architecture of the family."""
        from .factory import MODEL_ALIASES, list_models, model_family

        archs = [n for n in list_models() if model_family(n).model_class is cls]
        names = [a for a, arch in MODEL_ALIASES.items() if arch in archs and "/" not in a] + archs
        print(f"- support list of {cls.__name__} is:\n-    {names}\n- " + "-" * 37)
        return names


class PretrainedConfigMixin:
    """Mixed into each family's config class."""

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> Any:
        """The architecture of a name (no weights needed) or of a saved folder / file."""
        from .factory import get_model_config, read_checkpoint_config

        if _is_path(name_or_path):
            if os.path.isdir(name_or_path) or os.path.isfile(name_or_path):
                arch = read_checkpoint_config(name_or_path)
                if arch is None:
                    raise ValueError(f"{name_or_path} records no architecture")
                config = arch[1]
            else:
                raise FileNotFoundError(f"no model folder or file at {name_or_path}")
        else:
            config = get_model_config(name_or_path)
        if not isinstance(config, cls):
            raise ValueError(f"{name_or_path} is a {type(config).__name__}, not a {cls.__name__}")
        return config
