"""Shrunk timm trunks registered under test-only names, for runs through ``run_mindformer.py``
(a run config's ``custom_imports``) where a full-size trunk would take minutes a step."""
from dataclasses import replace

from mindclip.models.timm.registry import register_timm_model, timm_arch

# convnext_base's block and stage layout at an eighth of its widths, 3 blocks in stage 3
register_timm_model("mctest_convnext", replace(timm_arch("convnext_base"), depths=(1, 1, 3, 1),
                                               dims=(16, 32, 64, 128)))
