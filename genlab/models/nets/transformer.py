"""A GPT-2 style decoder-only transformer, with a KV cache for generation.

Token + learned position embeddings, pre-LayerNorm blocks (causal self-attention, GELU MLP),
final LayerNorm, and an output head that shares the token embedding's weights (Press & Wolf, 2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import NonFiniteLossError


class KVCache:
    """The keys and values of one attention layer for every position seen so far, preallocated to the block."""

    def __init__(self, batch_size: int, n_head: int, block_size: int, head_dim: int, like: Tensor) -> None:
        shape = (batch_size, n_head, block_size, head_dim)
        self.keys = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.values = torch.zeros(shape, dtype=like.dtype, device=like.device)
        self.length = 0

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, nh, T, hs) new keys and values; return all of them so far, (B, nh, length, hs) each."""
        end = self.length + keys.size(2)
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key and value projections in one matmul
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, C = x.size()
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, nh, positions so far, hs)
        # One query at a time (cached generation) may see every stored position; a block of queries that
        # starts at position 0 is causal. scaled_dot_product_attention picks flash/fused kernels where it can.
        is_causal = T > 1
        if is_causal and k.size(2) != T:
            raise ValueError("a multi-token step must start from an empty cache (prefill), one token at a time after")
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attention(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Next-token logits for every position of a sequence of token ids, which sees at most `block_size` of them."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} is not divisible by n_head={n_head}")
        self.block_size = block_size
        self.n_head = n_head
        self.wte = nn.Embedding(vocab_size, n_embd)  # token embedding
        self.wpe = nn.Embedding(block_size, n_embd)  # position embedding
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix embeds tokens and scores them

        # GPT-2 init: N(0, 0.02), and the projections that write into the residual stream scaled down by
        # 1/sqrt(2 * n_layer) so that the stream's variance does not grow with depth
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """Logits (B, T, vocab_size) for token ids `idx` (B, T); with `caches`, idx continues the cached positions."""
        start = caches[0].length if caches else 0
        T = idx.size(1)
        if start + T > self.block_size:
            raise ValueError(f"{start + T} positions, but the model sees at most block_size={self.block_size}")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, caches[i] if caches else None)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab_size)

    def new_caches(self, batch_size: int) -> list[KVCache]:
        """Empty KV caches, one per block, for generating `batch_size` sequences."""
        head_dim = self.wte.embedding_dim // self.n_head
        return [KVCache(batch_size, self.n_head, self.block_size, head_dim, self.wte.weight) for _ in self.blocks]

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue the sequences `idx` (B, T) by `max_new_tokens` sampled tokens; return (B, T + max_new_tokens).

        The context is the tokens since the last window shift: when it fills the block, it is cut to its
        last half, from which positions restart. With the cache that costs one forward position per token
        plus a re-encoding of half a block every half block, O(n) in all; nanoGPT's cut on every token would
        re-encode the whole block each time. Both paths use the same windows, so they give the same tokens.
        `temperature=0` picks the most likely token.
        """
        if idx.size(1) < 1:
            raise ValueError("generation needs a prompt of at least one token")
        window_start = max(0, idx.size(1) - self.block_size)
        caches, logits = None, None
        # self.forward, not self(...): once compiled (model.compile=true), every new length would recompile
        forward = self.forward
        for _ in range(max_new_tokens):
            if idx.size(1) - window_start >= self.block_size:  # the window is full: keep its last half
                window_start = idx.size(1) - max(1, self.block_size // 2)
                caches = None
            if not use_cache:
                logits = forward(idx[:, window_start:])[:, -1]  # (B, vocab_size)
            elif caches is None:  # encode the window once (prefill), then one position per token
                caches = self.new_caches(idx.size(0))
                logits = forward(idx[:, window_start:], caches)[:, -1]
            else:
                logits = forward(idx[:, -1:], caches)[:, -1]
            next_token = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat([idx, next_token], dim=1)
        return idx


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token id (B, 1) per row of `logits` (B, vocab_size): temperature, then top-k, then nucleus (top-p)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    # finite weights too large (a learning rate of 1e9) overflow to infinite scores: torch.multinomial would end in a
    # traceback (a device-side assert on a GPU), at a validation's text sample or in src.sample
    if not torch.isfinite(logits).all():
        raise NonFiniteLossError(
            "the next-token scores are NaN or infinite: the model's weights overflow (finite, but far too large: a "
            "learning rate too high?). Lower model.lr or clip gradients (trainer.gradient_clip_val=1.0)"
        )
    if top_k is not None and top_k < logits.size(-1):
        kth_largest = torch.topk(logits, top_k).values[:, [-1]]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p is not None and top_p < 1.0:
        # keep the smallest set of most likely tokens whose probabilities add up to top_p (Holtzman et al., 2020)
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # mass before this token already >= p
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
