"""Per-channel image statistics models are trained with, shared by the models (which record
theirs) and the data layer (which normalises with them)."""

# OpenAI's CLIP (and everything trained from it: open_clip, the dual encoder's ViT).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# ImageNet's (torchvision's), which DeCLIP trains and evaluates with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
