"""Mini-GPT: a transformer language model over characters or BPE tokens (nanoGPT's recipe, trained by Lightning).

The network needs the vocabulary, which only the data knows: it is taken from the datamodule in
`setup()`, built in `configure_model()` (where sharded strategies want models built), and kept
as a hyperparameter (the characters, or the BPE tokenizer's JSON), so that every checkpoint carries
it and sampling needs no dataset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from pydantic import Field
from torch import Tensor
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from genlab.capabilities import Temperature, TopK, TopP
from genlab.data.vocab import BpeVocab, CharVocab, Vocabulary, vocabulary
from genlab.errors import ConfigError
from genlab.models.compiling import Compile, compile_networks
from genlab.models.fused import AdamBetas, fused_optimizer_available
from genlab.models.hooks import SharedHooks
from genlab.models.logged_steps import is_last_validation
from genlab.models.nets.transformer import Transformer
from genlab.models.previews.text_sample import MAX_SAMPLE_LENGTH, TextSample
from genlab.utils.checkpoint_reader import CheckpointError, check_state_dict_fits
from genlab.utils.validation import check_arguments, check_finite


def _check_together(hp: Mapping[str, Any]) -> None:
    """The GPT's settings that constrain each other, which no one annotation can say."""
    if hp["n_embd"] % hp["n_head"]:  # each head gets n_embd / n_head dimensions
        raise ConfigError(f"model.n_embd={hp['n_embd']} must be divisible by model.n_head={hp['n_head']}")


class GPT(SharedHooks, L.LightningModule):
    """Next-token prediction with cross-entropy; logs loss (nats), perplexity, and bits per character (a
    character vocabulary) or per UTF-8 byte (BPE)."""

    # each range is declared once, here: a config (genlab/utils/validation.py), a checkpoint and this constructor are
    # checked against it, and the message names the key; _check_together holds what spans several settings
    def __init__(
        self,
        block_size: Annotated[int, Field(ge=1)],
        vocab: str | None = None,  # the characters, in id order
        tokenizer: str | None = None,  # or a byte-level BPE tokenizer's JSON (genlab/data/vocab.py)
        n_layer: Annotated[int, Field(ge=1)] = 4,
        n_head: Annotated[int, Field(ge=1)] = 4,
        n_embd: Annotated[int, Field(ge=1)] = 128,
        dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0,
        bias: bool = True,
        lr: Annotated[float, Field(gt=0)] = 1e-3,
        min_lr: Annotated[float, Field(ge=0)] = 1e-4,
        warmup_steps: Annotated[int, Field(ge=0)] = 100,
        lr_decay_steps: Annotated[int, Field(ge=1)] | None = None,
        betas: AdamBetas = (0.9, 0.99),
        weight_decay: Annotated[float, Field(ge=0)] = 0.1,
        compile: Compile = False,
        sample_prompt: str = "\n",
        sample_length: Annotated[int, Field(ge=0, le=MAX_SAMPLE_LENGTH)] = 200,  # 0: no text samples while training
        periodic_val_batches: Annotated[int, Field(ge=1)] | None = None,  # null: all of them
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_arguments(GPT, self.hparams, "model")
        _check_together(self.hparams)
        self.net: Transformer | None = None
        self.perplexity = Perplexity()  # exp(mean cross-entropy), accumulated over the epoch
        self.bits_per_byte = MeanMetric()  # a BPE's: each batch's bits per byte, weighted by its bytes
        try:
            self.vocab: Vocabulary | None = vocabulary(vocab, tokenizer)
        except ValueError as err:
            raise ConfigError(f"model.{'vocab' if tokenizer is None else 'tokenizer'}: {err}") from None

    def _use_vocab(self, vocab: Vocabulary) -> None:
        if self.vocab is not None and self.vocab != vocab:
            raise ConfigError(
                f"the data's vocabulary ({vocab}) differs from the model's ({self.vocab}): this checkpoint was "
                f"trained on another text, or with another data.tokenizer"
            )
        self.vocab = vocab
        self.hparams.update(vocab.as_hparams())

    def setup(self, stage: str) -> None:
        vocab = getattr(self.trainer.datamodule, "vocab", None)
        if not isinstance(vocab, (CharVocab, BpeVocab)):
            raise ConfigError(
                f"model=gpt trains on text, and {type(self.trainer.datamodule).__name__} has no vocabulary: use "
                f"data=text_file data.path=<your text> or data=shakespeare"
            )
        self._use_vocab(vocab)
        if self.hparams.sample_length:  # the first validation's sample would find out, after training has begun
            try:
                vocab.encode(self.hparams.sample_prompt)
            except ValueError as err:
                raise ConfigError(
                    f"model.sample_prompt={self.hparams.sample_prompt!r}: {err}; give a prompt of this text's "
                    f"characters (or model.sample_length=0: no samples while training)"
                ) from None

    def configure_model(self) -> None:
        if self.net is not None:
            return
        if self.vocab is None:
            raise RuntimeError("the vocabulary is unknown: call setup() or load a checkpoint first")
        hp = self.hparams
        self.net = Transformer(len(self.vocab), hp.block_size, hp.n_layer, hp.n_head, hp.n_embd, hp.dropout, hp.bias)
        if isinstance(self.vocab, BpeVocab):  # the UTF-8 bytes each token stands for, for bits per byte
            self.register_buffer("token_bytes", self.vocab.token_bytes(), persistent=False)
        if self.device_mesh is not None:  # trainer=fsdp (ModelParallelStrategy): shard here, as Lightning asks
            shard_blocks(self.net, self.device_mesh["data_parallel"])
        compile_networks(hp.compile, self.net)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the network is built by now: check before its weights load. Under trainer=fsdp the strategy has loaded
        # them already, into the shards (and took them out of `checkpoint`), with torch's strict check
        if "state_dict" in checkpoint:
            check_state_dict_fits(self, checkpoint["state_dict"])
        # a resumed run goes on with the vocabulary it was trained with: ids of another text's BPE can fit the
        # embedding's shape and still mean other tokens
        saved = checkpoint.get("hyper_parameters", {})
        if any(saved.get(key) != value for key, value in self.vocab.as_hparams().items()):
            raise CheckpointError(
                f"the checkpoint was trained with another vocabulary than this run's data has ({self.vocab}): "
                f"resume on the text and data.tokenizer it was trained with"
            )

    def forward(self, idx: Tensor) -> Tensor:
        """Next-token logits (B, T, vocab_size) for token ids (B, T)."""
        return self.net(idx)

    def flops_per_batch(self, batch: tuple[Tensor, Tensor]) -> float:
        """nanoGPT's estimate (PaLM, appendix B): 6N + 12·L·H·Q·T FLOPs per token for forward and backward, N the
        weights less the position embedding, L layers, H heads of Q dimensions, T tokens of context."""
        inputs = batch[0]  # (B, T)
        hp, context = self.hparams, inputs.shape[1]
        weights = sum(p.numel() for p in self.net.parameters()) - self.net.wpe.weight.numel()
        per_token = 6 * weights + 12 * hp.n_layer * hp.n_head * (hp.n_embd // hp.n_head) * context
        return float(per_token * inputs.numel())

    def _loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        inputs, targets = batch  # (B, T) each: targets are the inputs shifted by one token
        logits = self.net(inputs)  # (B, T, vocab_size)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten()), logits

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        self.log_training_values({"train/loss": loss})
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        loss, logits = self._loss(batch)
        self.perplexity.update(logits, batch[1])
        self.log(f"{split}/loss", loss, prog_bar=True, sync_dist=True)
        if isinstance(self.vocab, CharVocab):
            self.log(f"{split}/bpc", loss / math.log(2), sync_dist=True)  # bits per character
        else:  # bits per byte of UTF-8 text: comparable across tokenizers (and with bpc, on ASCII text)
            text_bytes = self.token_bytes[batch[1]].sum()
            self.bits_per_byte.update(loss * batch[1].numel() / math.log(2) / text_bytes, weight=text_bytes)
            self.log(f"{split}/bpb", self.bits_per_byte)
        self.log(f"{split}/ppl", self.perplexity)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        # Validations during training are estimates on the first batches of the fixed windows (the same ones
        # each time, so they compare with each other and pick the best checkpoint); the last one, which users
        # compare runs by, scores them all.
        budget = self.hparams.periodic_val_batches
        if budget is not None and batch_idx >= budget and not is_last_validation(self.trainer):
            return
        self._evaluate(batch, batch_idx, "val")

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay_steps = hp.lr_decay_steps or int(self.trainer.estimated_stepping_batches)
        optimizer = adamw(self.net, hp.lr, hp.betas, hp.weight_decay, fused=fused_optimizer_available(self))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine_lr(step, hp.lr, hp.min_lr, hp.warmup_steps, decay_steps) / hp.lr
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def previews(self) -> list[Callback]:
        return [TextSample(self.hparams.sample_prompt, self.hparams.sample_length)]

    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: Temperature = 1.0,
        top_k: TopK | None = None,
        top_p: TopP | None = None,
        num_samples: int = 1,
        seed: int | None = None,
    ) -> list[str]:
        """`num_samples` continuations of `prompt`, each `max_new_tokens` tokens longer than it."""
        check_finite(temperature, "sampling.temperature")
        check_arguments(GPT.generate_text, {"temperature": temperature, "top_k": top_k, "top_p": top_p}, "sampling")
        try:
            prompt_ids = self.vocab.encode(prompt)
        except ValueError as err:
            raise ConfigError(f"prompt={prompt!r}: {err}") from None
        if not prompt_ids.numel():
            raise ConfigError("prompt must hold at least one character (try prompt='\\n')")
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        idx = prompt_ids.to(self.device).expand(num_samples, -1)  # (num_samples, T)
        out = self.net.generate(idx, max_new_tokens, temperature, top_k, top_p, generator=generator)
        return [self.vocab.decode(row) for row in out]


def shard_blocks(net: Transformer, mesh: DeviceMesh) -> None:
    """FSDP2 over `mesh`: each block one unit (gathered for its forward and backward, then freed), and the rest
    (embeddings, final norm, tied head) one more; every process keeps only its shard of each parameter."""
    for block in net.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(net, mesh=mesh)
    # generate() calls self.forward, not the module: this runs the root unit's gathering around it too, so that
    # text sampling works on a sharded net (every process must take part: it is a collective)
    register_fsdp_forward_method(net, "generate")


def warmup_cosine_lr(step: int, lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `decay_steps` (as nanoGPT)."""
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def adamw(
    net: torch.nn.Module, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool
) -> torch.optim.AdamW:
    """AdamW that decays the matrices (weights, embeddings) but not the biases and LayerNorm gains."""
    params = [p for p in net.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused)
