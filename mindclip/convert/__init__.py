"""Weight conversion between PyTorch CLIP checkpoints and MindSpore (the only torch user)."""
from .converter import convert_checkpoint, export_to_openclip, save_converted
from .infer import infer_config, matching_model_names

__all__ = ["convert_checkpoint", "export_to_openclip", "save_converted", "infer_config",
           "matching_model_names"]
