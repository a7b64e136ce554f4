"""Convert CLIP weights between PyTorch and MindSpore.

    python tools/convert_weight.py --torch_path ViT-B-32.pt --mindspore_path clip_vit_b_32.ckpt \
        --allow_torchscript
    python tools/convert_weight.py --torch_path open_clip_dir/ --mindspore_path out.safetensors
    python tools/convert_weight.py --reverse --mindspore_path out.safetensors \
        --torch_path open_clip_state.safetensors
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindclip.convert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
