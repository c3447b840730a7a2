"""SigLIP weights in and out: OpenCLIP's ``ViT-*-SigLIP`` state dicts (a timm ViT with an
``attn_pool`` image tower and OpenCLIP's ``TextTransformer``) and Hugging Face's ``SiglipModel``
(``vision_model``/``text_model``), both ways, and big_vision's ``.npz`` checkpoints in.

Every mapping is a rename plus the attention layout: our layers are ``nn.TransformerEncoderLayer``
(fused ``in_proj`` q|k|v), timm fuses ``qkv`` (the same order) and its pooling probe splits ``q``
from ``kv``, Hugging Face keeps ``q_proj``/``k_proj``/``v_proj`` apart. The activations differ
by source and are carried in the config: Hugging Face's and big_vision's SigLIP use the tanh
GELU, OpenCLIP's (timm's and its own text tower) the exact one. ``tests/test_convert.py`` checks
each direction against randomly initialised models built by the real ``open_clip`` and
``transformers`` packages (the same embeddings within 1e-5).

The number of attention heads is not in a state dict: it comes from Hugging Face's
``config.json`` when there is one, else from the width by SigLIP's sizes (768: 12; 1024, 1152,
1280: 16; otherwise width / 64), or the caller's ``heads=``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Optional, Tuple

import torch

from .config import ModelConfig
from .model import SigLIP

SD = Dict[str, torch.Tensor]
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1152: 16, 1280: 16, 1536: 16}


def _heads(width: int, given: Optional[int]) -> int:
    return given or HEADS_BY_WIDTH.get(width, max(1, width // 64))


def _count(sd: SD, pattern: str) -> int:
    r = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [r.match(k)] if m})


def _layer_ours(prefix: str, i: int) -> str:
    return f"{prefix}.encoder.layers.{i}."


# -- our layers <-> the three layouts -----------------------------------------------------------


def _from_layer(src: SD, dst: SD, ours: str, theirs: str, style: str) -> None:
    """One transformer layer into our names. style: 'timm', 'openclip' (text) or 'hf'."""
    if style == "hf":
        names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "linear1": "mlp.fc1", "linear2": "mlp.fc2",
                 "self_attn.out_proj": "self_attn.out_proj"}
        for part in ("weight", "bias"):
            dst[f"{ours}self_attn.in_proj_{part}"] = torch.cat([src[f"{theirs}self_attn.{x}_proj.{part}"] for x in "qkv"])
    elif style == "timm":
        names = {"norm1": "norm1", "norm2": "norm2", "linear1": "mlp.fc1", "linear2": "mlp.fc2", "self_attn.out_proj": "attn.proj"}
        for part in ("weight", "bias"):
            dst[f"{ours}self_attn.in_proj_{part}"] = src[f"{theirs}attn.qkv.{part}"]
    else:
        names = {"norm1": "ln_1", "norm2": "ln_2", "linear1": "mlp.c_fc", "linear2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
        for part in ("weight", "bias"):
            dst[f"{ours}self_attn.in_proj_{part}"] = src[f"{theirs}attn.in_proj_{part}"]
    for a, b in names.items():
        for part in ("weight", "bias"):
            dst[f"{ours}{a}.{part}"] = src[f"{theirs}{b}.{part}"]


def _to_layer(src: SD, dst: SD, ours: str, theirs: str, style: str) -> None:
    """The inverse of :func:`_from_layer`."""
    if style == "hf":
        for part in ("weight", "bias"):
            q, k, v = src[f"{ours}self_attn.in_proj_{part}"].chunk(3)
            dst[f"{theirs}self_attn.q_proj.{part}"], dst[f"{theirs}self_attn.k_proj.{part}"], dst[f"{theirs}self_attn.v_proj.{part}"] = q, k, v
        names = {"norm1": "layer_norm1", "norm2": "layer_norm2", "linear1": "mlp.fc1", "linear2": "mlp.fc2",
                 "self_attn.out_proj": "self_attn.out_proj"}
    elif style == "timm":
        for part in ("weight", "bias"):
            dst[f"{theirs}attn.qkv.{part}"] = src[f"{ours}self_attn.in_proj_{part}"]
        names = {"norm1": "norm1", "norm2": "norm2", "linear1": "mlp.fc1", "linear2": "mlp.fc2", "self_attn.out_proj": "attn.proj"}
    else:
        for part in ("weight", "bias"):
            dst[f"{theirs}attn.in_proj_{part}"] = src[f"{ours}self_attn.in_proj_{part}"]
        names = {"norm1": "ln_1", "norm2": "ln_2", "linear1": "mlp.c_fc", "linear2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}
    for a, b in names.items():
        for part in ("weight", "bias"):
            dst[f"{theirs}{b}.{part}"] = src[f"{ours}{a}.{part}"]


def _scalar(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(())


# -- OpenCLIP ------------------------------------------------------------------------------------


def from_openclip(sd: SD, heads: Optional[int] = None, text_heads: Optional[int] = None) -> Tuple[SigLIP, int]:
    """An OpenCLIP SigLIP state dict → (our model, its image size)."""
    sd = _unwrap(sd)
    if "visual.trunk.attn_pool.latent" not in sd:
        raise ValueError("not an OpenCLIP SigLIP state dict (no visual.trunk.attn_pool.latent: a CLIP model, or another layout)")
    patch_w = sd["visual.trunk.patch_embed.proj.weight"]
    width, patch = patch_w.shape[0], patch_w.shape[2]
    grid = int(round(sd["visual.trunk.pos_embed"].shape[1] ** 0.5))
    text_width = sd["text.token_embedding.weight"].shape[1]
    cfg = ModelConfig(width=width, depth=_count(sd, r"visual\.trunk\.blocks\.(\d+)\."), heads=_heads(width, heads), patch=patch,
                      text_width=text_width, text_depth=_count(sd, r"text\.transformer\.resblocks\.(\d+)\."),
                      text_heads=_heads(text_width, text_heads), embed=sd["text.text_projection.weight"].shape[0],
                      max_len=sd["text.positional_embedding"].shape[0], mlp=sd["visual.trunk.blocks.0.mlp.fc1.weight"].shape[0],
                      text_mlp=sd["text.transformer.resblocks.0.mlp.c_fc.weight"].shape[0], act="gelu")
    ours: SD = {"image.patch.weight": patch_w, "image.patch.bias": sd["visual.trunk.patch_embed.proj.bias"],
                "image.pos": sd["visual.trunk.pos_embed"], "image.norm.weight": sd["visual.trunk.norm.weight"],
                "image.norm.bias": sd["visual.trunk.norm.bias"], "image.head.probe": sd["visual.trunk.attn_pool.latent"],
                "text.embed.weight": sd["text.token_embedding.weight"], "text.pos": sd["text.positional_embedding"][None],
                "text.norm.weight": sd["text.ln_final.weight"], "text.norm.bias": sd["text.ln_final.bias"],
                "text.proj.weight": sd["text.text_projection.weight"], "text.proj.bias": sd["text.text_projection.bias"],
                "t_prime": _scalar(sd["logit_scale"]), "bias": _scalar(sd["logit_bias"])}
    p = "visual.trunk.attn_pool."
    for part in ("weight", "bias"):
        ours[f"image.head.attention.in_proj_{part}"] = torch.cat([sd[f"{p}q.{part}"], sd[f"{p}kv.{part}"]])
        ours[f"image.head.attention.out_proj.{part}"] = sd[f"{p}proj.{part}"]
        ours[f"image.head.layernorm.{part}"] = sd[f"{p}norm.{part}"]
        ours[f"image.head.mlp.fc1.{part}"] = sd[f"{p}mlp.fc1.{part}"]
        ours[f"image.head.mlp.fc2.{part}"] = sd[f"{p}mlp.fc2.{part}"]
    for i in range(cfg.depth):
        _from_layer(sd, ours, _layer_ours("image", i), f"visual.trunk.blocks.{i}.", "timm")
    for i in range(cfg.text_depth):
        _from_layer(sd, ours, _layer_ours("text", i), f"text.transformer.resblocks.{i}.", "openclip")
    return _build(cfg, grid * patch, sd["text.token_embedding.weight"].shape[0], ours), grid * patch


def to_openclip(model: SigLIP) -> SD:
    """Our SigLIP model → an OpenCLIP SigLIP state dict (load it into
    ``open_clip.create_model("ViT-B-16-SigLIP")`` or the config of the same size)."""
    cfg = model.cfg
    _need_siglip(cfg)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: SD = {"visual.trunk.patch_embed.proj.weight": sd["image.patch.weight"], "visual.trunk.patch_embed.proj.bias": sd["image.patch.bias"],
               "visual.trunk.pos_embed": sd["image.pos"], "visual.trunk.norm.weight": sd["image.norm.weight"],
               "visual.trunk.norm.bias": sd["image.norm.bias"], "visual.trunk.attn_pool.latent": sd["image.head.probe"],
               "text.token_embedding.weight": sd["text.embed.weight"], "text.positional_embedding": sd["text.pos"][0],
               "text.ln_final.weight": sd["text.norm.weight"], "text.ln_final.bias": sd["text.norm.bias"],
               "text.text_projection.weight": sd["text.proj.weight"], "text.text_projection.bias": sd["text.proj.bias"],
               "logit_scale": sd["t_prime"].reshape(()), "logit_bias": sd["bias"].reshape(())}
    p = "visual.trunk.attn_pool."
    w = cfg.width
    for part in ("weight", "bias"):
        fused = sd[f"image.head.attention.in_proj_{part}"]
        out[f"{p}q.{part}"], out[f"{p}kv.{part}"] = fused[:w], fused[w:]
        out[f"{p}proj.{part}"] = sd[f"image.head.attention.out_proj.{part}"]
        out[f"{p}norm.{part}"] = sd[f"image.head.layernorm.{part}"]
        out[f"{p}mlp.fc1.{part}"] = sd[f"image.head.mlp.fc1.{part}"]
        out[f"{p}mlp.fc2.{part}"] = sd[f"image.head.mlp.fc2.{part}"]
    for i in range(cfg.depth):
        _to_layer(sd, out, _layer_ours("image", i), f"visual.trunk.blocks.{i}.", "timm")
    for i in range(cfg.text_depth):
        _to_layer(sd, out, _layer_ours("text", i), f"text.transformer.resblocks.{i}.", "openclip")
    return out


# -- Hugging Face --------------------------------------------------------------------------------


def from_hf(sd: SD, config: Optional[Dict[str, Any]] = None) -> Tuple[SigLIP, int]:
    """A Hugging Face ``SiglipModel`` state dict (and its ``config.json`` as a dict, for the head
    counts and the activation) → (our model, its image size)."""
    sd = _unwrap(sd)
    if "vision_model.head.probe" not in sd:
        raise ValueError("not a Hugging Face SiglipModel state dict (no vision_model.head.probe)")
    vc = (config or {}).get("vision_config", {}) or {}
    tc = (config or {}).get("text_config", {}) or {}
    patch_w = sd["vision_model.embeddings.patch_embedding.weight"]
    width, patch = patch_w.shape[0], patch_w.shape[2]
    grid = int(round(sd["vision_model.embeddings.position_embedding.weight"].shape[0] ** 0.5))
    text_width = sd["text_model.embeddings.token_embedding.weight"].shape[1]
    act = vc.get("hidden_act", "gelu_pytorch_tanh")
    cfg = ModelConfig(width=width, depth=_count(sd, r"vision_model\.encoder\.layers\.(\d+)\."),
                      heads=_heads(width, vc.get("num_attention_heads")), patch=patch, text_width=text_width,
                      text_depth=_count(sd, r"text_model\.encoder\.layers\.(\d+)\."),
                      text_heads=_heads(text_width, tc.get("num_attention_heads")), embed=sd["text_model.head.weight"].shape[0],
                      max_len=sd["text_model.embeddings.position_embedding.weight"].shape[0],
                      mlp=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                      text_mlp=sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                      ln_eps=float(vc.get("layer_norm_eps", 1e-6)), act="gelu_tanh" if "tanh" in act else "gelu")
    v, t = "vision_model.", "text_model."
    ours: SD = {"image.patch.weight": patch_w, "image.patch.bias": sd[f"{v}embeddings.patch_embedding.bias"],
                "image.pos": sd[f"{v}embeddings.position_embedding.weight"][None],
                "image.norm.weight": sd[f"{v}post_layernorm.weight"], "image.norm.bias": sd[f"{v}post_layernorm.bias"],
                "image.head.probe": sd[f"{v}head.probe"], "text.embed.weight": sd[f"{t}embeddings.token_embedding.weight"],
                "text.pos": sd[f"{t}embeddings.position_embedding.weight"][None], "text.norm.weight": sd[f"{t}final_layer_norm.weight"],
                "text.norm.bias": sd[f"{t}final_layer_norm.bias"], "text.proj.weight": sd[f"{t}head.weight"],
                "text.proj.bias": sd[f"{t}head.bias"], "t_prime": _scalar(sd["logit_scale"]), "bias": _scalar(sd["logit_bias"])}
    for part in ("weight", "bias"):
        ours[f"image.head.attention.in_proj_{part}"] = sd[f"{v}head.attention.in_proj_{part}"]
        ours[f"image.head.attention.out_proj.{part}"] = sd[f"{v}head.attention.out_proj.{part}"]
        for a in ("layernorm", "mlp.fc1", "mlp.fc2"):
            ours[f"image.head.{a}.{part}"] = sd[f"{v}head.{a}.{part}"]
    for i in range(cfg.depth):
        _from_layer(sd, ours, _layer_ours("image", i), f"{v}encoder.layers.{i}.", "hf")
    for i in range(cfg.text_depth):
        _from_layer(sd, ours, _layer_ours("text", i), f"{t}encoder.layers.{i}.", "hf")
    return _build(cfg, grid * patch, sd[f"{t}embeddings.token_embedding.weight"].shape[0], ours), grid * patch


def to_hf(model: SigLIP, image_size: int) -> Tuple[SD, Dict[str, Any]]:
    """Our SigLIP model → (a Hugging Face ``SiglipModel`` state dict, the ``SiglipConfig``
    arguments: ``SiglipModel(SiglipConfig(**config))`` loads the state dict strictly)."""
    cfg = model.cfg
    _need_siglip(cfg)
    if cfg.embed != cfg.text_width:
        raise ValueError("Hugging Face's SiglipModel needs the text head to keep the width (projection_size = hidden_size)")
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    v, t = "vision_model.", "text_model."
    out: SD = {f"{v}embeddings.patch_embedding.weight": sd["image.patch.weight"], f"{v}embeddings.patch_embedding.bias": sd["image.patch.bias"],
               f"{v}embeddings.position_embedding.weight": sd["image.pos"][0], f"{v}post_layernorm.weight": sd["image.norm.weight"],
               f"{v}post_layernorm.bias": sd["image.norm.bias"], f"{v}head.probe": sd["image.head.probe"],
               f"{t}embeddings.token_embedding.weight": sd["text.embed.weight"], f"{t}embeddings.position_embedding.weight": sd["text.pos"][0],
               f"{t}final_layer_norm.weight": sd["text.norm.weight"], f"{t}final_layer_norm.bias": sd["text.norm.bias"],
               f"{t}head.weight": sd["text.proj.weight"], f"{t}head.bias": sd["text.proj.bias"],
               "logit_scale": sd["t_prime"].reshape(1), "logit_bias": sd["bias"].reshape(1)}
    for part in ("weight", "bias"):
        out[f"{v}head.attention.in_proj_{part}"] = sd[f"image.head.attention.in_proj_{part}"]
        out[f"{v}head.attention.out_proj.{part}"] = sd[f"image.head.attention.out_proj.{part}"]
        for a in ("layernorm", "mlp.fc1", "mlp.fc2"):
            out[f"{v}head.{a}.{part}"] = sd[f"image.head.{a}.{part}"]
    for i in range(cfg.depth):
        _to_layer(sd, out, _layer_ours("image", i), f"{v}encoder.layers.{i}.", "hf")
    for i in range(cfg.text_depth):
        _to_layer(sd, out, _layer_ours("text", i), f"{t}encoder.layers.{i}.", "hf")
    act = "gelu_pytorch_tanh" if cfg.act == "gelu_tanh" else "gelu"
    config = {"vision_config": {"hidden_size": cfg.width, "intermediate_size": cfg.mlp_width, "num_hidden_layers": cfg.depth,
                                "num_attention_heads": cfg.heads, "image_size": image_size, "patch_size": cfg.patch,
                                "hidden_act": act, "layer_norm_eps": cfg.ln_eps},
              "text_config": {"vocab_size": sd["text.embed.weight"].shape[0], "hidden_size": cfg.text_width,
                              "intermediate_size": cfg.text_mlp_width, "num_hidden_layers": cfg.text_depth,
                              "num_attention_heads": cfg.text_heads, "max_position_embeddings": cfg.max_len, "hidden_act": act,
                              "layer_norm_eps": cfg.ln_eps}}
    return out, config


# -- big_vision ----------------------------------------------------------------------------------


def from_big_vision(npz: Dict[str, Any], heads: Optional[int] = None, text_heads: Optional[int] = None) -> Tuple[SigLIP, int]:
    """A big_vision SigLIP checkpoint (the released ``.npz``: ``params/img/...``,
    ``params/txt/...``, ``params/t``, ``params/b``) → (our model, its image size). Flax kernels are
    ``[in, out]`` (transposed here), attention kernels ``[D, heads, head_dim]``, and the
    activation is the tanh GELU, as in big_vision."""
    p = {k[len("params/"):] if k.startswith("params/") else k: torch.as_tensor(v) for k, v in npz.items()}
    if "img/MAPHead_0/probe" not in p:
        raise ValueError("not a big_vision SigLIP checkpoint (no params/img/MAPHead_0/probe)")
    patch_k = p["img/embedding/kernel"]  # [ph, pw, 3, D]
    width, patch = patch_k.shape[3], patch_k.shape[0]
    grid = int(round(p["img/pos_embedding"].shape[1] ** 0.5))
    text_width = p["txt/Embed_0/embedding"].shape[1]
    depth = _count(p, r"img/Transformer/encoderblock_(\d+)/")
    text_depth = _count(p, r"txt/Encoder_0/encoderblock_(\d+)/")
    h = p["img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"].shape[1]
    th = p["txt/Encoder_0/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel"].shape[1]
    cfg = ModelConfig(width=width, depth=depth, heads=heads or h, patch=patch, text_width=text_width, text_depth=text_depth,
                      text_heads=text_heads or th, embed=p["txt/head/kernel"].shape[1], max_len=p["txt/pos_embedding"].shape[1],
                      mlp=p["img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1],
                      text_mlp=p["txt/Encoder_0/encoderblock_0/MlpBlock_0/Dense_0/kernel"].shape[1])

    def lin(k: str) -> Tuple[torch.Tensor, torch.Tensor]:
        return p[f"{k}/kernel"].T.contiguous(), p[f"{k}/bias"]

    def attn(k: str, dst: str, ours: SD) -> None:
        w = [p[f"{k}/{x}/kernel"].reshape(p[f"{k}/{x}/kernel"].shape[0], -1).T for x in ("query", "key", "value")]
        b = [p[f"{k}/{x}/bias"].reshape(-1) for x in ("query", "key", "value")]
        ours[f"{dst}in_proj_weight"], ours[f"{dst}in_proj_bias"] = torch.cat(w), torch.cat(b)
        out_k = p[f"{k}/out/kernel"]  # [heads, head_dim, D]
        ours[f"{dst}out_proj.weight"] = out_k.reshape(-1, out_k.shape[-1]).T.contiguous()
        ours[f"{dst}out_proj.bias"] = p[f"{k}/out/bias"]

    ours: SD = {"image.patch.weight": patch_k.permute(3, 2, 0, 1).contiguous(), "image.patch.bias": p["img/embedding/bias"],
                "image.pos": p["img/pos_embedding"], "image.norm.weight": p["img/Transformer/encoder_norm/scale"],
                "image.norm.bias": p["img/Transformer/encoder_norm/bias"], "image.head.probe": p["img/MAPHead_0/probe"],
                "text.embed.weight": p["txt/Embed_0/embedding"], "text.pos": p["txt/pos_embedding"],
                "text.norm.weight": p["txt/Encoder_0/encoder_norm/scale"], "text.norm.bias": p["txt/Encoder_0/encoder_norm/bias"],
                "t_prime": _scalar(p["t"]), "bias": _scalar(p["b"])}
    ours["text.proj.weight"], ours["text.proj.bias"] = lin("txt/head")
    attn("img/MAPHead_0/MultiHeadDotProductAttention_0", "image.head.attention.", ours)
    ours["image.head.layernorm.weight"], ours["image.head.layernorm.bias"] = p["img/MAPHead_0/LayerNorm_0/scale"], p["img/MAPHead_0/LayerNorm_0/bias"]
    ours["image.head.mlp.fc1.weight"], ours["image.head.mlp.fc1.bias"] = lin("img/MAPHead_0/MlpBlock_0/Dense_0")
    ours["image.head.mlp.fc2.weight"], ours["image.head.mlp.fc2.bias"] = lin("img/MAPHead_0/MlpBlock_0/Dense_1")
    for tower, prefix, n in (("image", "img/Transformer/encoderblock_", depth), ("text", "txt/Encoder_0/encoderblock_", text_depth)):
        for i in range(n):
            b, o = f"{prefix}{i}/", _layer_ours(tower, i)
            attn(f"{b}MultiHeadDotProductAttention_0", f"{o}self_attn.", ours)
            ours[f"{o}norm1.weight"], ours[f"{o}norm1.bias"] = p[f"{b}LayerNorm_0/scale"], p[f"{b}LayerNorm_0/bias"]
            ours[f"{o}norm2.weight"], ours[f"{o}norm2.bias"] = p[f"{b}LayerNorm_1/scale"], p[f"{b}LayerNorm_1/bias"]
            ours[f"{o}linear1.weight"], ours[f"{o}linear1.bias"] = lin(f"{b}MlpBlock_0/Dense_0")
            ours[f"{o}linear2.weight"], ours[f"{o}linear2.bias"] = lin(f"{b}MlpBlock_0/Dense_1")
    return _build(cfg, grid * patch, p["txt/Embed_0/embedding"].shape[0], ours), grid * patch


# -- files ---------------------------------------------------------------------------------------


def _unwrap(sd: Any) -> SD:
    """A state dict from a file: unwrap ``{"state_dict": ...}``, strip DDP's ``module.``."""
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError("expected a state dict (a mapping of names to tensors)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def _need_siglip(cfg: ModelConfig) -> None:
    if cfg.pool != "map" or cfg.text_pool != "last":
        raise ValueError("only a SigLIP model (MAP head, last-token text) can be exported; this one is the mean-pooled variant")


def _build(cfg: ModelConfig, image_size: int, vocab: int, ours: SD) -> SigLIP:
    model = SigLIP(cfg, image_size, vocab)
    missing, unexpected = model.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return model.eval()


def read_state_dict(path: str) -> Tuple[SD, Optional[Dict[str, Any]]]:
    """(state dict, Hugging Face config or None) from a file (``.safetensors``, ``.bin``, ``.pt``,
    ``.npz``) or a Hugging Face model folder (``config.json`` + ``model.safetensors``)."""
    config = None
    if os.path.isdir(path):
        cfg_path = os.path.join(path, "config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path, encoding="utf-8") as f:
                config = json.load(f)
        files = [f for f in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.bin")
                 if os.path.isfile(os.path.join(path, f))]
        if not files:
            raise FileNotFoundError(f"{path}: no model.safetensors, pytorch_model.bin or open_clip_*.bin/safetensors")
        path = os.path.join(path, files[0])
    if path.endswith(".safetensors"):
        from .._extras import require

        st = require("safetensors.torch", "safetensors (for .safetensors weights)", "train")
        return st.load_file(path), config
    if path.endswith(".npz"):
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}, config
    # weights_only: a weights file is data, never code.
    return torch.load(path, map_location="cpu", weights_only=True), config


def load_any(path: str, heads: Optional[int] = None) -> Tuple[SigLIP, int, str]:
    """Released SigLIP weights from any of the three layouts → (model, image size, layout)."""
    sd, config = read_state_dict(path)
    if any(k.startswith("params/img/") or k.startswith("img/") for k in sd):
        m, size = from_big_vision(sd, heads)
        return m, size, "big_vision"
    sd = _unwrap(sd)
    if "vision_model.head.probe" in sd:
        m, size = from_hf(sd, config)
        return m, size, "huggingface"
    if "visual.trunk.attn_pool.latent" in sd:
        m, size = from_openclip(sd, heads)
        return m, size, "open_clip"
    raise ValueError(f"{path}: not a SigLIP checkpoint this package reads (OpenCLIP ViT-*-SigLIP, Hugging Face "
                     f"SiglipModel, big_vision .npz, or a webli-io checkpoint.pt)")
