"""The line every benchmark prints first: which machine and which torch produced its numbers."""

import os
import platform

import torch


def describe_machine() -> str:
    return (
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, CUDA {'available' if torch.cuda.is_available() else 'not available'}"
    )
