"""The DataLoader of datasets that cut whole batches at once (through __getitems__)."""

from __future__ import annotations

from torch.utils.data import DataLoader, Dataset, default_convert


def batch_loader(dataset: Dataset | None, batch_size: int, shuffle: bool, num_workers: int) -> DataLoader:
    """A DataLoader whose dataset's __getitems__(indices) returns the batch itself: nothing is left to collate."""
    if dataset is None:
        raise RuntimeError("call setup() before asking for a dataloader")
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=default_convert,  # passes the batch's tensors through as they are
        persistent_workers=num_workers > 0,
    )
