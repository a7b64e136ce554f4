"""timm image towers, laid out as timm lays them out: :mod:`.registry` (timm model names ->
architectures), one file per timm model family (:mod:`.vit`, :mod:`.vit_relpos`, :mod:`.eva`,
:mod:`.convnext`), the layers they
share (:mod:`.layers`, :mod:`.trunk`) and open_clip's ``TimmModel`` head (:mod:`.head`).

Only the registry is imported here: the configs read it, and the trunk files (which build on
the model layers that import the configs) register their names when it is first asked."""
from .registry import TIMM_MODELS, TimmArch, TrunkArch, register_timm_model, timm_arch, timm_model_names

__all__ = ["TIMM_MODELS", "TimmArch", "TrunkArch", "register_timm_model", "timm_arch", "timm_model_names"]
