"""What one `self.log` call costs inside a training step: `python -m benchmarks.log_cost`.

The reason genlab/models/logged_steps.py skips `self.log` on the steps whose values no logger writes.
"""

from __future__ import annotations

import argparse
import time

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.machine import describe_machine


class TinyModel(L.LightningModule):
    """A step that does almost nothing but `values_per_step` calls of self.log, timed."""

    def __init__(self, values_per_step: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(10, 1)
        self.values_per_step = values_per_step
        self.log_seconds = 0.0
        self.steps = 0

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        start = time.perf_counter()
        for k in range(self.values_per_step):
            self.log(f"train/value{k}", loss)
        self.log_seconds += time.perf_counter() - start
        self.steps += 1
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    print(describe_machine())
    data = DataLoader(TensorDataset(torch.randn(2 * args.steps, 10)), batch_size=2)
    for values in (1, 5):
        model = TinyModel(values)
        trainer = L.Trainer(
            max_steps=args.steps,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, data)
        per_call_ms = model.log_seconds / model.steps / values * 1e3
        print(f"{values} value(s) per step: {per_call_ms:.3f} ms per self.log call")


if __name__ == "__main__":
    main()
