"""GPT-2's decoder (Radford et al. 2019), so llmlab's engine serves GPT-2-shaped Hugging Face folders too.

The differences from llmlab's Llama-shaped :class:`~llmlab.transformer.TransformerLM`: learned absolute
positions added to the token embeddings, LayerNorm with a bias, biases on every projection, and a two-layer
MLP with the tanh approximation of GELU (``gelu_new``) instead of SwiGLU; the head is tied to the token
embedding. Parameters keep llmlab's (d_out, d_in) layout (GPT-2's ``Conv1D`` weights are transposed on
load), and the block exposes the same names the KV-cache engine reads (``attn_norm``, ``wq``.. ``wo``,
``ffn_norm``, ``mlp``), plus the biases ``bq``.. ``bo``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from llmlab import transformer as T
from llmlab.attention import scaled_dot_product_attention
from llmlab.transformer import Norm, TransformerConfig

# transformers' ACT2FN names that are the tanh approximation (GPT-2's own) or the exact erf GELU
GELU_APPROXIMATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


class GPT2Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, gelu: str = "tanh"):
        super().__init__()
        d, f = cfg.d_model, cfg.d_ff
        self.cfg, self.gelu = cfg, gelu
        self.attn_norm, self.ffn_norm = Norm(d, "layernorm", cfg.norm_eps), Norm(d, "layernorm", cfg.norm_eps)
        self.wq, self.wk, self.wv, self.wo = (nn.Parameter(torch.zeros(d, d)) for _ in range(4))
        self.bq, self.bk, self.bv, self.bo = (nn.Parameter(torch.zeros(d)) for _ in range(4))
        self.w_fc, self.b_fc = nn.Parameter(torch.zeros(f, d)), nn.Parameter(torch.zeros(f))
        self.w_proj, self.b_proj = nn.Parameter(torch.zeros(d, f)), nn.Parameter(torch.zeros(d))

    def mlp(self, x: Tensor) -> Tensor:
        h = nn.functional.gelu(T.linear(x, self.w_fc, self.b_fc), approximate=self.gelu)
        return T.linear(h, self.w_proj, self.b_proj)

    def forward(self, x: Tensor) -> Tensor:
        B, L, d = x.shape
        H = self.cfg.n_heads
        h = self.attn_norm(x)
        q, k, v = (T.linear(h, w, b).reshape(B, L, H, d // H).transpose(1, 2)
                   for w, b in ((self.wq, self.bq), (self.wk, self.bk), (self.wv, self.bv)))
        y = scaled_dot_product_attention(q, k, v, causal=True)
        x = x + T.linear(y.transpose(1, 2).reshape(B, L, d), self.wo, self.bo)
        return x + self.mlp(self.ffn_norm(x))


class GPT2LM(nn.Module):
    """``forward(ids (B, T))`` -> logits (B, T, vocab). ``config`` is a TransformerConfig with learned
    positions and LayerNorm (its ``d_ff`` the MLP width, 4 d for GPT-2)."""

    def __init__(self, cfg: TransformerConfig, gelu: str = "tanh"):
        super().__init__()
        if cfg.positions != "learned" or cfg.norm != "layernorm" or not cfg.tie_embeddings:
            raise ValueError("GPT-2 has learned positions, LayerNorm and a head tied to the embedding")
        self.config = cfg
        self.embed = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.d_model))
        self.pos_embed = nn.Parameter(torch.zeros(cfg.context, cfg.d_model))
        self.blocks = nn.ModuleList(GPT2Block(cfg, gelu) for _ in range(cfg.n_layers))
        self.final_norm = Norm(cfg.d_model, "layernorm", cfg.norm_eps)
        self.head = None

    @torch.no_grad()
    def forward(self, ids: Tensor) -> Tensor:
        if ids.shape[1] > self.config.context:
            raise ValueError(f"sequence of {ids.shape[1]} tokens is longer than the context ({self.config.context})")
        x = T.embedding(ids, self.embed) + self.pos_embed[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return T.linear(self.final_norm(x), self.embed)

    @classmethod
    def from_hf(cls, config: dict, state: dict[str, Tensor]) -> GPT2LM:
        """From a GPT-2 config.json and its state dict (``GPT2LMHeadModel`` or ``GPT2Model`` names)."""
        act = config.get("activation_function", "gelu_new")
        if act not in GELU_APPROXIMATION:
            raise ValueError(f"GPT-2 activation {act!r} is not supported (one of {sorted(GELU_APPROXIMATION)})")
        if config.get("scale_attn_by_inverse_layer_idx") or not config.get("scale_attn_weights", True):
            raise ValueError("only GPT-2's standard attention scaling (1/sqrt(head_dim)) is supported")
        d = config["n_embd"]
        cfg = TransformerConfig(vocab_size=config["vocab_size"], context=config["n_positions"], d_model=d,
                                n_layers=config["n_layer"], n_heads=config["n_head"],
                                d_ff=config.get("n_inner") or 4 * d, positions="learned", norm="layernorm",
                                norm_eps=config.get("layer_norm_epsilon", 1e-5), tie_embeddings=True)
        model = cls(cfg, GELU_APPROXIMATION[act])
        sd = {k.removeprefix("transformer."): v for k, v in state.items()}
        ours = {"embed": sd["wte.weight"], "pos_embed": sd["wpe.weight"],
                "final_norm.weight": sd["ln_f.weight"], "final_norm.bias": sd["ln_f.bias"]}
        for i in range(cfg.n_layers):
            p = f"h.{i}."
            wq, wk, wv = sd[p + "attn.c_attn.weight"].t().split(d, dim=0)  # Conv1D (in, out) -> (out, in)
            bq, bk, bv = sd[p + "attn.c_attn.bias"].split(d)
            b = f"blocks.{i}."
            ours.update({b + "wq": wq, b + "wk": wk, b + "wv": wv, b + "bq": bq, b + "bk": bk, b + "bv": bv,
                         b + "wo": sd[p + "attn.c_proj.weight"].t(), b + "bo": sd[p + "attn.c_proj.bias"],
                         b + "w_fc": sd[p + "mlp.c_fc.weight"].t(), b + "b_fc": sd[p + "mlp.c_fc.bias"],
                         b + "w_proj": sd[p + "mlp.c_proj.weight"].t(), b + "b_proj": sd[p + "mlp.c_proj.bias"]})
            for norm, theirs in (("attn_norm", "ln_1"), ("ffn_norm", "ln_2")):
                ours[f"{b}{norm}.weight"], ours[f"{b}{norm}.bias"] = sd[f"{p}{theirs}.weight"], sd[f"{p}{theirs}.bias"]
        model.load_state_dict({k: v.contiguous() for k, v in ours.items()})
        return model
