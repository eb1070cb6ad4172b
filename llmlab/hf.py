"""llmlab models as Hugging Face folders, and back (lab m09; the inference service serves such folders).

A Llama-shaped :class:`~llmlab.transformer.TransformerLM` (RoPE, RMSNorm, SwiGLU, no biases) is written as
``LlamaForCausalLM``: config.json, model.safetensors with Llama's parameter names, and the tokenizer files,
so ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` loads it (and vLLM serves it). Other
shapes are written with llmlab's own names and ``"architectures": ["LlmlabTransformerLM"]``: llmlab loads
those back, Hugging Face does not. :func:`load` also reads folders llmlab did not write: Llama (grouped-query
attention included) and GPT-2 (as :class:`~llmlab.gpt2.GPT2LM`), so the inference engine serves them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import torch

from llmlab.transformer import TransformerConfig, TransformerLM

LLAMA_NAMES = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
               "wq": "self_attn.q_proj.weight", "wk": "self_attn.k_proj.weight", "wv": "self_attn.v_proj.weight",
               "wo": "self_attn.o_proj.weight", "w1": "mlp.gate_proj.weight", "w3": "mlp.up_proj.weight",
               "w2": "mlp.down_proj.weight"}


def _llama_names(cfg: TransformerConfig) -> dict[str, str]:
    """llmlab's state-dict key -> Llama's, for every parameter of a model with this config."""
    names = {"embed": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        names["head"] = "lm_head.weight"
    for i in range(cfg.n_layers):
        names.update({f"blocks.{i}.{ours}": f"model.layers.{i}.{theirs}" for ours, theirs in LLAMA_NAMES.items()})
    return names


def _llama_state(model: TransformerLM) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {theirs: sd[ours] for ours, theirs in _llama_names(model.config).items()}


def llama_config(cfg: TransformerConfig, dtype: torch.dtype, special: dict) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.d_model, "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_heads,
            "head_dim": cfg.d_model // cfg.n_heads,
            "max_position_embeddings": cfg.context, "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": cfg.tie_embeddings,
            "torch_dtype": str(dtype).removeprefix("torch."), "initializer_range": 0.02, **special,
            "llmlab": {"config": asdict(cfg)}}


def export(model: TransformerLM, out_dir, tokenizer=None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model`` (and ``tokenizer``, anything with ``save(dir)``) as a Hugging Face folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    special = {}
    if tokenizer is not None:
        tokenizer.save(out)
        for name in ("bos_token_id", "eos_token_id"):
            if getattr(tokenizer, name, None) is not None:
                special[name] = getattr(tokenizer, name)
    if cfg.llama_shaped:
        state, config = _llama_state(model), llama_config(cfg, dtype, special)
    else:
        state = dict(model.state_dict())
        config = {"architectures": ["LlmlabTransformerLM"], "model_type": "llmlab", "llmlab": {"config": asdict(cfg)}}
    save_file({k: v.detach().to(dtype).contiguous() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"do_sample": True, **special}, indent=2))
    return out


def load_state(path) -> dict[str, torch.Tensor]:
    """A folder's weights: model.safetensors, sharded safetensors (model.safetensors.index.json), or
    pytorch_model.bin (loaded with ``weights_only``: tensors, never code)."""
    from safetensors.torch import load_file

    path = Path(path)
    if (path / "model.safetensors").exists():
        return load_file(str(path / "model.safetensors"))
    if (path / "model.safetensors.index.json").exists():
        shards = sorted(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(str(path / shard)).items()}
    if (path / "pytorch_model.bin").exists():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load(path, dtype: torch.dtype = torch.float32):
    """Load a model folder: one written by :func:`export` (a :class:`TransformerLM`), any Llama folder
    (grouped-query attention included: its shared key/value heads are repeated, which computes the same
    function), or any GPT-2 folder (a :class:`~llmlab.gpt2.GPT2LM`)."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json (not a Hugging Face model folder)")
    config = json.loads((path / "config.json").read_text())
    state = load_state(path)
    if config.get("model_type") == "gpt2":
        from llmlab.gpt2 import GPT2LM

        return GPT2LM.from_hf(config, state).to(dtype)
    if "llmlab" in config:
        known = {f.name for f in fields(TransformerConfig)}
        cfg = TransformerConfig(**{k: v for k, v in config["llmlab"]["config"].items() if k in known})
    elif config.get("model_type") == "llama":
        cfg = _llama_config(config)
    else:
        raise ValueError(f"{path}: not an llmlab, Llama or GPT-2 model folder (model_type "
                         f"{config.get('model_type')!r})")
    model = TransformerLM(cfg)
    if config.get("model_type") == "llama":
        heads = config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads
        state = {ours: state[theirs] for ours, theirs in _llama_names(cfg).items()}
        if kv_heads != heads:  # query head h reads key/value head h // (heads / kv_heads), as HF's repeat_kv
            for name in [k for k in state if k.endswith((".wk", ".wv"))]:
                w = state[name]
                state[name] = w.reshape(kv_heads, -1, w.shape[1]).repeat_interleave(heads // kv_heads, 0).reshape(
                    -1, w.shape[1])
    model.load_state_dict(state)
    return model.to(dtype)


def _llama_config(config: dict) -> TransformerConfig:
    d, heads = config["hidden_size"], config["num_attention_heads"]
    unsupported = {"rope_scaling": config.get("rope_scaling"), "attention_bias": config.get("attention_bias"),
                   "mlp_bias": config.get("mlp_bias")}
    if config.get("head_dim", d // heads) != d // heads:
        unsupported["head_dim"] = config["head_dim"]
    if config.get("hidden_act", "silu") != "silu":
        unsupported["hidden_act"] = config["hidden_act"]
    if heads % (config.get("num_key_value_heads") or heads):
        unsupported["num_key_value_heads"] = config["num_key_value_heads"]
    bad = {k: v for k, v in unsupported.items() if v}
    if bad:
        raise ValueError(f"unsupported Llama settings: {bad}")
    return TransformerConfig(vocab_size=config["vocab_size"], context=config["max_position_embeddings"], d_model=d,
                             n_layers=config["num_hidden_layers"], n_heads=heads, d_ff=config["intermediate_size"],
                             rope_theta=config.get("rope_theta", 10000.0), norm_eps=config.get("rms_norm_eps", 1e-5),
                             tie_embeddings=config.get("tie_word_embeddings", False))
