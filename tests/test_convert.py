"""SigLIP as the references define it: our towers hold OpenCLIP's and Hugging Face's SigLIP
weights and compute the same embeddings (within 1e-5), both ways, on randomly initialised
reference models built by the real `open_clip` and `transformers` packages; the image tower
with its MAP head has the parameter count of Hugging Face's SiglipVisionModel of the same size;
the MAP head's attention is a distribution over the patches."""

from __future__ import annotations

import pytest
import torch

from webli_io.siglip.config import MODELS, ModelConfig, model_config, with_pooling
from webli_io.siglip.convert import from_hf, from_openclip, to_hf, to_openclip
from webli_io.siglip.model import SigLIP, count_params

TOL = 1e-5


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Random values in every weight (LayerNorm scales and zero-initialised biases too), so a
    mapping that swaps or drops a tensor cannot pass by symmetry."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _hf_tiny():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.SiglipConfig(
        text_config=dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=16),
        vision_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8))
    torch.manual_seed(0)
    model = transformers.SiglipModel(cfg).eval()
    _perturb(model, 1)
    return model, cfg


def _features(out):
    """transformers returns the pooled tensor, or (newer) an output object holding it."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _inputs(image_size: int, vocab: int, max_len: int, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, image_size, image_size, generator=g) * 2 - 1
    ids = torch.randint(1, vocab, (3, max_len), generator=g)
    ids[0, 5:] = 1  # a padded caption: SigLIP pads to max_len and reads the last position
    return images, ids


@torch.no_grad()
def test_hugging_face_siglip_weights_give_the_same_embeddings():
    ref, cfg = _hf_tiny()
    ours, size = from_hf(ref.state_dict(), cfg.to_dict())
    assert size == 32 and ours.cfg.heads == 4 and ours.cfg.act == "gelu_tanh"
    images, ids = _inputs(32, 300, 16)
    assert torch.allclose(ours.image(images), _features(ref.get_image_features(pixel_values=images)), atol=TOL)
    assert torch.allclose(ours.text(ids), _features(ref.get_text_features(input_ids=ids)), atol=TOL)
    assert torch.allclose(ours.t_prime, ref.logit_scale[0]) and torch.allclose(ours.bias, ref.logit_bias[0])


@torch.no_grad()
def test_export_to_hugging_face_loads_strictly_and_matches():
    transformers = pytest.importorskip("transformers")
    cfg = ModelConfig(width=64, depth=2, heads=4, patch=8, text_width=64, text_depth=2, text_heads=4, embed=64, max_len=16, mlp=96, text_mlp=96)
    torch.manual_seed(3)
    ours = SigLIP(cfg, 32, 300).eval()
    _perturb(ours, 4)
    sd, config = to_hf(ours, 32)
    ref = transformers.SiglipModel(transformers.SiglipConfig(**config)).eval()
    ref.load_state_dict(sd, strict=True)
    images, ids = _inputs(32, 300, 16, seed=5)
    assert torch.allclose(_features(ref.get_image_features(pixel_values=images)), ours.image(images), atol=TOL)
    assert torch.allclose(_features(ref.get_text_features(input_ids=ids)), ours.text(ids), atol=TOL)


@pytest.fixture(scope="module")
def openclip_b16():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(6)
    model = open_clip.create_model("ViT-B-16-SigLIP", pretrained=None).eval()
    _perturb(model, 7)
    return open_clip, model


@torch.no_grad()
def test_openclip_siglip_weights_give_the_same_embeddings(openclip_b16):
    _, ref = openclip_b16
    ours, size = from_openclip(ref.state_dict())
    assert size == 224 and ours.cfg.heads == 12 and ours.cfg.depth == 12 and ours.cfg.act == "gelu"
    images, ids = _inputs(224, 32000, 64, seed=8)
    assert torch.allclose(ours.image(images), ref.encode_image(images), atol=TOL)
    assert torch.allclose(ours.text(ids), ref.encode_text(ids), atol=TOL)
    # ... and written back, into a second OpenCLIP model, strictly.
    other = openclip_b16[0].create_model("ViT-B-16-SigLIP", pretrained=None).eval()
    other.load_state_dict(to_openclip(ours), strict=True)
    assert torch.allclose(other.encode_image(images), ref.encode_image(images), atol=TOL)
    assert torch.allclose(other.encode_text(ids), ref.encode_text(ids), atol=TOL)


def test_the_map_tower_has_hugging_faces_parameter_count():
    transformers = pytest.importorskip("transformers")
    vc = transformers.SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                         image_size=224, patch_size=16)
    hf = count_params(transformers.SiglipVisionModel(vc))
    ours = count_params(SigLIP(MODELS["b16"], 224, 32000).image)
    assert ours == hf, (ours, hf)  # 92.9M: ViT-B/16's 86M plus the MAP head


def test_map_attention_is_a_distribution_over_patches():
    cfg = MODELS["tiny"]
    torch.manual_seed(0)
    model = SigLIP(cfg, 32, 259).eval()
    w = model.image.attention(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert w.shape == (2, 16) and torch.allclose(w.sum(1), torch.ones(2), atol=1e-5) and (w >= 0).all()
    mean = SigLIP(with_pooling(cfg, "mean"), 32, 259)
    with pytest.raises(ValueError, match="mean-pooled"):
        mean.image.attention(torch.zeros(1, 3, 32, 32))


def test_earlier_checkpoints_load_as_the_mean_variant():
    saved = {"width": 128, "depth": 4, "heads": 4, "patch": 8, "text_width": 128, "text_depth": 2, "text_heads": 4, "embed": 128,
             "max_len": 64, "mlp": None, "text_mlp": None}
    cfg = model_config(saved)
    assert (cfg.pool, cfg.text_pool, cfg.ln_eps, cfg.act) == ("mean", "mean", 1e-5, "gelu")
    assert model_config({**saved, "pool": "map", "text_pool": "last", "ln_eps": 1e-6, "act": "gelu_tanh"}).pool == "map"


def _spm(tmp_path, vocab: int = 100) -> str:
    spm = pytest.importorskip("sentencepiece")
    from tests.conftest import CAPTIONS

    lines = [t for _, t in CAPTIONS] * 20 + [f"a photo of a {w} picture number {i}" for i in range(40) for w in ("red", "blue", "cat")]
    (tmp_path / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    prefix = str(tmp_path / "sp")
    spm.SentencePieceTrainer.train(input=str(tmp_path / "corpus.txt"), model_prefix=prefix, vocab_size=vocab, model_type="unigram",
                                   character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return prefix + ".model"


def test_siglip_tokenizer_is_hugging_faces(tmp_path):
    transformers = pytest.importorskip("transformers")
    from webli_io.siglip.tokenizers import load_tokenizer

    path = _spm(tmp_path)
    ours = load_tokenizer("siglip:" + path, 16)
    ref = transformers.SiglipTokenizer(vocab_file=path)
    texts = ["A Photo of a RED cat!", "picture number 7, blue.", "a very long caption " * 6]
    got = ours(texts)
    want = ref(texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt")["input_ids"]
    assert got.tolist() == want.tolist()


def test_eval_and_score_run_released_hugging_face_weights(tmp_path, photos):
    import json
    import subprocess
    import sys

    from tests.test_benchmarks import real
    from webli_io.sample_data import write_sample_dataset
    from webli_io.siglip import replicas as R

    ref, _ = _hf_tiny()
    ref.save_pretrained(str(tmp_path / "hf"))
    tok = "siglip:" + _spm(tmp_path)
    coco = R.coco(str(tmp_path / "coco"), real(photos))
    run = [sys.executable, "-m", "webli_io"]
    r = subprocess.run([*run, "eval", str(tmp_path / "hf"), "-o", str(tmp_path / "rep"), "--json", "--benchmark", f"coco={coco}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--tokenizer" in r.stderr  # released weights: their tokenizer is needed
    r = subprocess.run([*run, "eval", str(tmp_path / "hf"), "-o", str(tmp_path / "rep"), "--json", "--benchmark", f"coco={coco}",
                        "--tokenizer", tok], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["benchmarks"]["coco"]["texts"] == 20
    shards = write_sample_dataset(str(tmp_path / "data"), num_shards=1, samples_per_shard=20, bad_samples=False)
    r = subprocess.run([*run, "score", *shards, "--checkpoint", str(tmp_path / "hf"), "--tokenizer", tok, "-o", str(tmp_path / "scored"),
                        "--keep-fraction", "0.25", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    t = out["keep_fraction"]["threshold"]
    kept = out["report"]["kept_share"]["language"]
    assert out["samples"] == 20 and isinstance(t, float) and 0 < max(kept.values()) <= 1


def _to_big_vision_npz(sd, heads: int, text_heads: int):
    """Hugging Face SigLIP weights written in big_vision's checkpoint layout, as its released
    ``.npz`` files hold them (and transformers' ``convert_siglip_to_hf.py`` reads them): flax
    kernels ``[in, out]``, the patch kernel ``[ph, pw, 3, D]``, attention ``query/key/value``
    kernels ``[D, heads, head_dim]`` and ``out`` ``[heads, head_dim, D]``, ``params/t``/``params/b``."""
    out = {}

    def dense(dst, w, b):
        out[f"{dst}/kernel"], out[f"{dst}/bias"] = w.T.numpy(), b.numpy()

    def ln(dst, src):
        out[f"{dst}/scale"], out[f"{dst}/bias"] = sd[f"{src}.weight"].numpy(), sd[f"{src}.bias"].numpy()

    def attn(dst, q, k, v, o, h):
        for name, (w, b) in zip(("query", "key", "value"), (q, k, v)):
            d = w.shape[1]
            out[f"{dst}/{name}/kernel"] = w.T.reshape(d, h, d // h).numpy()
            out[f"{dst}/{name}/bias"] = b.reshape(h, -1).numpy()
        ow, ob = o
        out[f"{dst}/out/kernel"] = ow.T.reshape(h, -1, ow.shape[0]).numpy()
        out[f"{dst}/out/bias"] = ob.numpy()

    v, t = "vision_model.", "text_model."
    out["params/img/embedding/kernel"] = sd[f"{v}embeddings.patch_embedding.weight"].permute(2, 3, 1, 0).numpy()
    out["params/img/embedding/bias"] = sd[f"{v}embeddings.patch_embedding.bias"].numpy()
    out["params/img/pos_embedding"] = sd[f"{v}embeddings.position_embedding.weight"][None].numpy()
    ln("params/img/Transformer/encoder_norm", f"{v}post_layernorm")
    out["params/img/MAPHead_0/probe"] = sd[f"{v}head.probe"].numpy()
    qkv_w, qkv_b = sd[f"{v}head.attention.in_proj_weight"].chunk(3), sd[f"{v}head.attention.in_proj_bias"].chunk(3)
    attn("params/img/MAPHead_0/MultiHeadDotProductAttention_0", *zip(qkv_w, qkv_b),
         (sd[f"{v}head.attention.out_proj.weight"], sd[f"{v}head.attention.out_proj.bias"]), heads)
    ln("params/img/MAPHead_0/LayerNorm_0", f"{v}head.layernorm")
    dense("params/img/MAPHead_0/MlpBlock_0/Dense_0", sd[f"{v}head.mlp.fc1.weight"], sd[f"{v}head.mlp.fc1.bias"])
    dense("params/img/MAPHead_0/MlpBlock_0/Dense_1", sd[f"{v}head.mlp.fc2.weight"], sd[f"{v}head.mlp.fc2.bias"])
    out["params/txt/Embed_0/embedding"] = sd[f"{t}embeddings.token_embedding.weight"].numpy()
    out["params/txt/pos_embedding"] = sd[f"{t}embeddings.position_embedding.weight"][None].numpy()
    ln("params/txt/Encoder_0/encoder_norm", f"{t}final_layer_norm")
    dense("params/txt/head", sd[f"{t}head.weight"], sd[f"{t}head.bias"])
    for src, dst, h in ((v, "params/img/Transformer/encoderblock_", heads), (t, "params/txt/Encoder_0/encoderblock_", text_heads)):
        for i in range(2):
            s, d = f"{src}encoder.layers.{i}.", f"{dst}{i}/"
            ln(f"{d}LayerNorm_0", f"{s}layer_norm1")
            ln(f"{d}LayerNorm_1", f"{s}layer_norm2")
            attn(f"{d}MultiHeadDotProductAttention_0", *[(sd[f"{s}self_attn.{x}_proj.weight"], sd[f"{s}self_attn.{x}_proj.bias"]) for x in "qkv"],
                 (sd[f"{s}self_attn.out_proj.weight"], sd[f"{s}self_attn.out_proj.bias"]), h)
            dense(f"{d}MlpBlock_0/Dense_0", sd[f"{s}mlp.fc1.weight"], sd[f"{s}mlp.fc1.bias"])
            dense(f"{d}MlpBlock_0/Dense_1", sd[f"{s}mlp.fc2.weight"], sd[f"{s}mlp.fc2.bias"])
    out["params/t"], out["params/b"] = sd["logit_scale"].numpy(), sd["logit_bias"].numpy()
    return out


@torch.no_grad()
def test_big_vision_npz_gives_the_same_embeddings(tmp_path):
    import numpy as np

    from webli_io.siglip.convert import load_any

    ref, _ = _hf_tiny()
    np.savez(tmp_path / "siglip.npz", **_to_big_vision_npz({k: v.detach() for k, v in ref.state_dict().items()}, 4, 4))
    ours, size, layout = load_any(str(tmp_path / "siglip.npz"))
    assert layout == "big_vision" and size == 32 and ours.cfg.heads == 4 and ours.cfg.act == "gelu_tanh"
    images, ids = _inputs(32, 300, 16, seed=9)
    assert torch.allclose(ours.image(images), _features(ref.get_image_features(pixel_values=images)), atol=TOL)
    assert torch.allclose(ours.text(ids), _features(ref.get_text_features(input_ids=ids)), atol=TOL)


def test_score_with_an_openclip_clip_model_as_external_scorer(tmp_path):
    """The paper's filter scores with a CLIP model, not the one being studied: any OpenCLIP
    architecture, weights from a local file (here a random ViT-B-32 written by open_clip)."""
    import json
    import subprocess
    import sys

    open_clip = pytest.importorskip("open_clip")
    from webli_io.sample_data import write_sample_dataset
    from webli_io.siglip.evalsuite import load_checkpoint

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    torch.save(clip.state_dict(), tmp_path / "vit-b-32.bin")
    spec = f"openclip:ViT-B-32:{tmp_path / 'vit-b-32.bin'}"
    towers, tok, size = load_checkpoint(spec, torch.device("cpu"))
    assert size == 224 and tok(["a cat"]).shape == (1, 77)
    x = torch.rand(1, 3, 224, 224) * 2 - 1
    with torch.no_grad():  # webli-io's [-1, 1] tiles, re-normalised with CLIP's own mean and std
        mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        assert torch.allclose(towers.image(x), clip.encode_image(((x + 1) / 2 - mean) / std), atol=1e-5)
    shards = write_sample_dataset(str(tmp_path / "data"), num_shards=1, samples_per_shard=12, bad_samples=False)
    run = [sys.executable, "-m", "webli_io", "score", *shards, "-o", str(tmp_path / "scored"), "--json"]
    r = subprocess.run([*run, "--checkpoint", spec, "--keep-fraction", "0.5"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["samples"] == 12 and out["unscored"] == 0 and -1 <= out["keep_fraction"]["threshold"] <= 1
    for bad, msg in (("openclip:ViT-B-32:laion2b_s34b_b79k", "local file"), ("openclip:NoSuchNet:x.bin", "not an OpenCLIP")):
        r = subprocess.run([*run[:-3], "-o", str(tmp_path / "s2"), "--checkpoint", bad], capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
