"""Architecture configuration of CLIP towers.

Field names follow open_clip's ``CLIPVisionCfg``/``CLIPTextCfg`` so that its
JSON model configs can be read unchanged; keys we do not implement are rejected
with the list of the valid ones instead of being silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from .diff import config_differences
from .layers import BlockCfg
from .pretrained import PretrainedConfigMixin
from .timm.registry import timm_arch


def _from_dict(cls, data: Dict[str, Any], where: str):
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - valid)
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in {where}; valid keys are: {sorted(valid)}")
    return cls(**data)


def _check_choice(where: str, value: Any, valid) -> None:
    if value not in valid:
        raise ValueError(f"{where} {value!r} is not one of {list(valid)}")


@dataclass
class _BlockOptions:
    """Options of a tower's transformer blocks, with open_clip's names: LayerScale's initial
    value, the activation's keyword arguments (``{"approximate": "tanh"}``) and the norm's
    (``{"eps": 1e-6}``)."""

    ls_init_value: Optional[float] = None
    act_kwargs: Optional[Dict[str, Any]] = None
    norm_kwargs: Optional[Dict[str, Any]] = None

    def _check_block_options(self, where: str) -> None:
        act = dict(self.act_kwargs or {})
        _check_choice(f"{where}.act_kwargs approximate", act.pop("approximate", "none"),
                      ("none", "tanh"))
        norm = dict(self.norm_kwargs or {})
        norm.pop("eps", None)
        for name, rest in (("act_kwargs", act), ("norm_kwargs", norm)):
            if rest:
                raise ValueError(f"{where}.{name}: unsupported key(s) {sorted(rest)}")

    def block(self, quick_gelu: bool) -> BlockCfg:
        """The blocks' :class:`BlockCfg` under the model's activation choice."""
        approximate = (self.act_kwargs or {}).get("approximate", "none")
        if quick_gelu and approximate != "none":
            raise ValueError("quick_gelu and act_kwargs.approximate cannot both be set")
        act = "quick_gelu" if quick_gelu else ("gelu_tanh" if approximate == "tanh" else "gelu")
        return BlockCfg(act=act, norm_eps=float((self.norm_kwargs or {}).get("eps", 1e-5)),
                        ls_init_value=self.ls_init_value)

    @property
    def norm_eps(self) -> float:
        return float((self.norm_kwargs or {}).get("eps", 1e-5))


@dataclass
class CLIPVisionCfg(_BlockOptions):
    """Image tower: a ViT when ``layers`` is an int, a ModifiedResNet when it is a 4-tuple.

    The ViT's options are open_clip's (``CLIPVisionCfg``), with its defaults:
    ``patch_dropout`` (FLIP: the fraction of patch tokens dropped in training),
    ``attentional_pool`` (an attentional pooler of ``attn_pooler_queries`` queries and
    ``attn_pooler_heads`` heads before ``ln_post``), ``pool_type`` (``tok``: the class token,
    ``avg``: the mean of the patch tokens, ``none``: every token), ``final_ln_after_pool``
    (``ln_post`` on the pooled feature instead of on every token), ``no_ln_pre``,
    ``pos_embed_type`` (``learnable`` or a fixed ``sin_cos_2d``), ``output_tokens`` (the
    tower also returns its tokens, for CoCa).
    """

    layers: Union[Tuple[int, int, int, int], List[int], int] = 12
    width: int = 768
    head_width: int = 64
    mlp_ratio: float = 4.0
    patch_size: Optional[int] = 16
    image_size: int = 224
    patch_dropout: float = 0.0
    attentional_pool: bool = False
    attn_pooler_queries: int = 256
    attn_pooler_heads: int = 8
    no_ln_pre: bool = False
    pos_embed_type: str = "learnable"
    final_ln_after_pool: bool = False
    pool_type: str = "tok"
    output_tokens: bool = False

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, (list, tuple))

    @property
    def heads(self) -> int:
        # ModifiedResNet's attention pool works on width * 32 channels (open_clip's rule).
        if self.is_resnet:
            return self.width * 32 // self.head_width
        return self.width // self.head_width

    def __post_init__(self):
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        if self.is_resnet and len(self.layers) != 4:
            raise ValueError(f"a ResNet image tower needs 4 stage depths, got {self.layers}")
        if not self.is_resnet:
            if not self.patch_size:
                raise ValueError("a ViT image tower needs patch_size")
            if self.image_size % self.patch_size:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        pooled_width = self.width * 32 if self.is_resnet else self.width
        if pooled_width % self.head_width:
            raise ValueError(f"attention width {pooled_width} is not a multiple of "
                             f"head_width {self.head_width}")
        _check_choice("vision_cfg.pool_type", self.pool_type, ("tok", "avg", "none"))
        _check_choice("vision_cfg.pos_embed_type", self.pos_embed_type, ("learnable", "sin_cos_2d"))
        if not isinstance(self.attentional_pool, bool):
            # open_clip's 'parallel'/'cascade' poolers are marked untested WIP there
            raise ValueError(f"vision_cfg.attentional_pool {self.attentional_pool!r}: only "
                             "true/false (open_clip's CoCa pooler) is implemented")
        if not 0.0 <= self.patch_dropout < 1.0:
            raise ValueError(f"vision_cfg.patch_dropout {self.patch_dropout} is not in [0, 1)")
        self._check_block_options("vision_cfg")
        if self.is_resnet:
            defaults = CLIPVisionCfg(patch_size=16)
            vit_only = [f.name for f in dataclasses.fields(self)
                        if f.name not in ("layers", "width", "head_width", "mlp_ratio",
                                          "patch_size", "image_size")
                        and getattr(self, f.name) != getattr(defaults, f.name)]
            if vit_only:
                raise ValueError(f"vision_cfg {vit_only} are ViT options; a ModifiedResNet "
                                 "(layers given per stage) has none of them")


@dataclass
class TimmVisionCfg:
    """Image tower built the way open_clip builds a timm one (``TimmModel``,
    :mod:`.timm.head`): the timm trunk named ``timm_model_name`` (its architecture from
    :mod:`.timm`'s registry), pooled by ``timm_pool`` (``''``: the trunk's own, ``token``,
    ``avg``, ``map``) and projected by ``timm_proj`` (``linear`` or ``mlp`` with
    ``timm_proj_bias``, ``none``, or ``null``: the trunk's own classifier), with
    ``timm_drop`` (dropout before the projection), ``timm_drop_path`` (stochastic depth) and
    ``patch_dropout`` (FLIP), under open_clip's names and defaults.

    ``width``/``layers``/``heads``/``mlp_ratio``/``patch_size``/``act``/``norm_eps`` give a
    SigLIP ViT's architecture directly instead (a Hugging Face ``SiglipModel``'s vision config
    has no timm name); with a timm name they must be unset or equal to its row.
    """

    image_size: int = 224
    timm_model_name: Optional[str] = None
    timm_model_pretrained: bool = False
    timm_pool: str = "avg"
    timm_proj: Optional[str] = "linear"
    timm_proj_bias: bool = False
    timm_drop: float = 0.0
    timm_drop_path: Optional[float] = None
    patch_dropout: float = 0.0
    width: Optional[int] = None
    layers: Optional[int] = None
    heads: Optional[int] = None
    mlp_ratio: Optional[float] = None
    patch_size: Optional[int] = None
    act: Optional[str] = None
    norm_eps: Optional[float] = None

    ARCH_FIELDS = ("width", "layers", "heads", "mlp_ratio", "patch_size", "act", "norm_eps")

    def __post_init__(self):
        where = "vision_cfg"
        if self.timm_model_pretrained:
            raise ValueError(f"{where}.timm_model_pretrained: mindclip never loads timm's own "
                             "image weights; the model's weights come from its checkpoint")
        _check_choice(f"{where}.timm_pool", self.timm_pool, ("", "token", "avg", "map"))
        _check_choice(f"{where}.timm_proj", self.timm_proj, ("linear", "mlp", "none", None))
        for name in ("timm_drop", "timm_drop_path", "patch_dropout"):
            if not 0.0 <= float(getattr(self, name) or 0.0) < 1.0:
                raise ValueError(f"{where}.{name} {getattr(self, name)} is not in [0, 1)")
        arch = self.arch  # a name must be known, explicit numbers complete
        # an image size that is not a multiple of the patch is timm's too: the last pixels
        # are not seen (ViT-SO400M-14-SigLIP-384)
        if getattr(arch, "heads", None) and arch.width % arch.heads:
            raise ValueError(f"{where} width {arch.width} is not a multiple of heads {arch.heads}")
        if self.timm_pool not in arch.POOLS:
            raise ValueError(f"{where}.timm_pool {self.timm_pool!r}: timm's {self.timm_model_name} "
                             f"pools with one of {list(arch.POOLS)}")
        if self.timm_pool == "token" and not getattr(arch, "class_token", False):
            raise ValueError(f"{where}.timm_pool token: timm's {self.timm_model_name} has no class token")

    @property
    def explicit(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.ARCH_FIELDS if getattr(self, k) is not None}

    @property
    def arch(self):
        """The trunk's architecture (a :class:`~mindclip.models.timm.TimmArch`): the timm
        name's row, or a SigLIP ViT of the explicit numbers."""
        from .timm.vit import ViTArch

        explicit = self.explicit
        if self.timm_model_name:
            row = timm_arch(self.timm_model_name, self.image_size)
            wrong = {k: v for k, v in explicit.items() if getattr(row, k, None) != v}
            if wrong:
                raise ValueError(f"vision_cfg {wrong} contradict timm's {self.timm_model_name}")
            return row
        missing = [k for k in self.ARCH_FIELDS if k not in explicit and k not in ("act", "norm_eps", "mlp_ratio")]
        if missing:
            raise ValueError(f"vision_cfg needs timm_model_name or the architecture ({missing} missing)")
        _check_choice("vision_cfg.act", explicit.get("act", "gelu"), ("gelu", "gelu_tanh"))
        return ViTArch(image_size=self.image_size, class_token=False, global_pool="map", **explicit)

    def to_dict(self) -> Dict[str, Any]:
        """open_clip's fields, plus the explicit architecture only where given."""
        return {k: v for k, v in asdict(self).items()
                if k not in self.ARCH_FIELDS or v is not None}


@dataclass
class CLIPTextCfg(_BlockOptions):
    """Text transformer, with open_clip's options (``CLIPTextCfg``) and defaults.

    ``pool_type`` picks the pooled token: ``argmax`` (the highest id: OpenAI's end of text),
    ``eos`` (the first ``eos_id``), ``first``, ``last`` or ``none`` (every token);
    ``no_causal_mask`` makes attention bidirectional; ``embed_cls`` appends a learned class
    token that is pooled instead, with padding (``pad_id``) masked (CoCa); ``proj_type``
    ``linear`` or ``none``, ``proj_bias`` a Linear projection with bias (open_clip; DeCLIP).
    ``hf_tokenizer_name`` / ``tokenizer_kwargs`` / ``tokenizer_mode`` choose the tokenizer
    (``get_tokenizer``), not the tower.

    ``hf_model_name`` makes the tower a Hugging Face text encoder instead (RoBERTa,
    XLM-RoBERTa, BERT, mT5/T5, NLLB's M2M-100), pooled by ``hf_pooler_type``
    (``mean_pooler``, ``cls_pooler``, ``cls_last_hidden_state_pooler``) and projected by
    ``hf_proj_type`` (``mlp``, ``linear``, or none when the widths match); its architecture is
    the model's ``config.json`` (``hf_model_config``: read from the weights' folder, the
    Hugging Face cache or the Hub when the tower is built, then recorded with the weights),
    never typed per model. ``hf_model_pretrained`` is open_clip's and changes nothing here
    (weights always come from the checkpoint loaded).
    """

    context_length: int = 77
    vocab_size: int = 49408
    hf_tokenizer_name: Optional[str] = None
    tokenizer_mode: Optional[str] = None
    tokenizer_kwargs: Optional[Dict[str, Any]] = None
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    embed_cls: bool = False
    pad_id: int = 0
    eos_id: int = 2
    no_causal_mask: bool = False
    final_ln_after_pool: bool = False
    pool_type: str = "argmax"
    proj_bias: bool = False
    proj_type: str = "linear"
    output_tokens: bool = False
    hf_model_name: Optional[str] = None
    hf_model_pretrained: bool = True
    hf_proj_type: Optional[str] = "mlp"
    hf_pooler_type: str = "mean_pooler"
    hf_model_config: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        _check_choice("text_cfg.hf_pooler_type", self.hf_pooler_type,
                      ("mean_pooler", "cls_pooler", "cls_last_hidden_state_pooler"))
        _check_choice("text_cfg.hf_proj_type", self.hf_proj_type, ("mlp", "linear", None))
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not a multiple of heads {self.heads}")
        _check_choice("text_cfg.pool_type", self.pool_type, ("argmax", "eos", "first", "last", "none"))
        # open_clip's native text tower builds a Linear projection for anything but 'none'
        # ('mlp' is a Hugging Face tower option): refused rather than read two ways.
        _check_choice("text_cfg.proj_type", self.proj_type, ("linear", "none"))
        if self.final_ln_after_pool:
            raise ValueError("text_cfg.final_ln_after_pool: open_clip's text tower accepts but "
                             "ignores it; mindclip refuses it rather than ignore it too")
        self._check_block_options("text_cfg")


@dataclass
class CLIPConfig(PretrainedConfigMixin):
    """A whole CLIP model: shared embedding size, both towers and the activation.

    ``init_logit_bias`` adds a learnable ``logit_bias`` (SigLIP's) with that initial value;
    ``custom_text`` only says how open_clip lays out the text tower's weights (under
    ``text.``), which the converters follow.
    """

    embed_dim: int = 512
    vision_cfg: CLIPVisionCfg = field(default_factory=CLIPVisionCfg)
    text_cfg: CLIPTextCfg = field(default_factory=CLIPTextCfg)
    quick_gelu: bool = False
    custom_text: bool = False
    init_logit_bias: Optional[float] = None

    @classmethod
    def vision_cfg_class(cls, vision: Dict[str, Any]) -> type:
        """A timm tower's config whenever the dict names timm options (open_clip's
        ``timm_model_name``), else a native tower's; an empty dict takes the family's default
        tower."""
        if any(k.startswith("timm_") for k in vision):
            return TimmVisionCfg
        if vision:
            return CLIPVisionCfg
        return type(cls.__dataclass_fields__["vision_cfg"].default_factory())

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "CLIPConfig":
        data = dict(data)
        vision = data.pop("vision_cfg", {})
        text = data.pop("text_cfg", {})
        top = _from_dict(cls, data, "model config")
        top.vision_cfg = vision if isinstance(vision, (CLIPVisionCfg, TimmVisionCfg)) else _from_dict(
            cls.vision_cfg_class(vision), vision, "vision_cfg")
        top.text_cfg = text if isinstance(text, CLIPTextCfg) else _from_dict(
            CLIPTextCfg, text, "text_cfg")
        if top.text_cfg.hf_model_name:
            top.custom_text = True  # open_clip lays Hugging Face towers out under text.
        return top

    @classmethod
    def from_json(cls, path: str) -> "CLIPConfig":
        with open(path, "r", encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        if isinstance(self.vision_cfg, TimmVisionCfg):
            d["vision_cfg"] = self.vision_cfg.to_dict()
        else:
            d["vision_cfg"]["layers"] = (list(self.vision_cfg.layers) if self.vision_cfg.is_resnet
                                         else self.vision_cfg.layers)
        if d["text_cfg"]["hf_model_config"] is None:  # ours, not open_clip's: only when known
            del d["text_cfg"]["hf_model_config"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def differences(self, other: "CLIPConfig") -> List[str]:
        """Human-readable list of fields where ``other`` differs from this config."""
        return config_differences(self.to_dict(), other.to_dict())
