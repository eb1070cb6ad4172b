"""The three networks of RLHF on llmlab's TransformerLM: the policy with a value head (actor and critic
sharing the trunk, as TRL's AutoModelForCausalLMWithValueHead), the frozen reference policy (a copy of the
supervised policy) and the reward model (a trunk with a scalar head read at the reply's last token)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from llmlab.transformer import TransformerLM


class PolicyWithValue(nn.Module):
    def __init__(self, lm: TransformerLM):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, ids: Tensor, prompt_len: int) -> tuple[Tensor, Tensor]:
        """(logits (B, R, V), values (B, R)) at the R positions that predict the reply's tokens."""
        at = reply_positions(prompt_len)
        logits, residuals = self.lm(ids, return_residuals=True, logits_at=at)
        return logits, self.value_head(self.lm.final_norm(residuals[-1][:, at])).squeeze(-1)


class RewardModel(nn.Module):
    """A language-model trunk (initialized from the supervised policy, as Ouyang et al. do) and a linear
    score read at each sequence's last token."""

    def __init__(self, lm: TransformerLM, seed: int = 0):
        super().__init__()
        self.lm = copy.deepcopy(lm)
        with torch.random.fork_rng(devices=[]):  # the head's own seed: the same in every process, whatever
            torch.manual_seed(seed)  # drew from the global generator before (it differed between processes)
            self.score_head = nn.Linear(lm.config.d_model, 1)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """Scores (B,) of prompt + reply sequences ``ids`` (B, T), read at each reply's last token (``mask``:
        (B, R), 1 on the reply's tokens, the reply being the last R positions)."""
        h = self.lm.final_norm(self.lm.trunk(ids)[-1])  # the vocabulary's head is never read here
        last = ids.shape[1] - mask.shape[1] + mask.sum(1).long() - 1
        return self.score_head(h[torch.arange(len(ids)), last]).squeeze(-1)


def reply_positions(prompt_len: int) -> slice:
    """The positions P-1..T-2, whose logits predict the reply's tokens at P..T-1."""
    return slice(prompt_len - 1, -1)


def response_logprobs(logits: Tensor, ids: Tensor, prompt_len: int) -> Tensor:
    """log pi(token) of each reply token of ``ids`` (B, P + R), from the logits (B, R, V) at the
    ``reply_positions``."""
    logp = torch.log_softmax(logits.float(), -1)
    return logp.gather(-1, ids[:, prompt_len:, None]).squeeze(-1)


def reply_logprobs(lm: TransformerLM, ids: Tensor, prompt_len: int) -> Tensor:
    """(B, R): log pi(token) of each reply token under ``lm``, its head applied at the reply's positions only."""
    return response_logprobs(lm(ids, logits_at=reply_positions(prompt_len)), ids, prompt_len)


@torch.no_grad()
def sample(lm: TransformerLM, prompts: Tensor, max_new: int, eos: int, temperature: float = 1.0,
           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample replies to ``prompts`` (B, P): returns (ids (B, P + max_new), response mask (B, max_new)),
    the mask 1 up to and including each reply's end-of-reply token, the ids after it padding (0)."""
    ids = lm.generate(prompts, max_new, temperature=temperature, generator=generator)
    reply = ids[:, prompts.shape[1]:]
    ended = (reply == eos).int().cumsum(1)
    mask = (ended - (reply == eos).int()) == 0  # before the first eos, and the eos itself
    return torch.cat([prompts, torch.where(mask, reply, 0)], 1), mask.float()
