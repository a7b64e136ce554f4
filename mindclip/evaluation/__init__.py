"""Evaluation: zero-shot classification, retrieval metrics, class names and templates."""
from .metrics import classification_metrics, retrieval_metrics, topk_labels
from .prompts import (CIFAR10_CLASSNAMES, CIFAR100_CLASSNAMES, CIFAR_TEMPLATES,
                      imagenet_classnames, imagenet_templates, load_class_names, load_templates)
from .zero_shot import build_classifier, zero_shot_evaluate

__all__ = ["classification_metrics", "retrieval_metrics", "topk_labels", "CIFAR10_CLASSNAMES",
           "CIFAR100_CLASSNAMES", "CIFAR_TEMPLATES", "imagenet_classnames", "imagenet_templates",
           "load_class_names", "load_templates", "build_classifier", "zero_shot_evaluate"]
