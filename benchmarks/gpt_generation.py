"""Generation speed of the Mini-GPT: new characters/second with and without the KV cache.

    python -m benchmarks.gpt_generation [--experiment gpt_shakespeare_cpu] [--new-tokens 500] [--ckpt path]

Times `generate` for one sequence continuing a one-character prompt, both paths from the same seed,
and checks that they produced the same characters. Speed does not depend on the weights: without
`--ckpt`, the experiment's network is freshly initialised (its vocabulary: Tiny Shakespeare's 65 characters).
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.machine import describe_machine
from genlab.checkpoints import load_model
from genlab.models.nets.transformer import Transformer
from genlab.utils.config import compose


def build_net(args: argparse.Namespace) -> Transformer:
    if args.ckpt:
        return load_model(args.ckpt).net
    m = compose([f"experiment={args.experiment}", "paths.output_dir=outputs/benchmarks"]).model
    return Transformer(65, m.block_size, m.n_layer, m.n_head, m.n_embd, 0.0, m.bias).eval()


def timed_generate(net: Transformer, new_tokens: int, use_cache: bool, repeats: int) -> tuple[float, torch.Tensor]:
    """Best of `repeats` wall times, and the tokens generated."""
    prompt = torch.zeros(1, 1, dtype=torch.long)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = net.generate(
            prompt,
            new_tokens,
            temperature=0.8,
            top_k=50,
            use_cache=use_cache,
            generator=torch.Generator().manual_seed(0),
        )
        times.append(time.perf_counter() - start)
    return min(times), tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="gpt_shakespeare_cpu")
    parser.add_argument("--ckpt", default=None, help="a trained GPT checkpoint instead of a fresh network")
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    net = build_net(args)

    cached_seconds, cached = timed_generate(net, args.new_tokens, use_cache=True, repeats=args.repeats)
    recomputed_seconds, recomputed = timed_generate(net, args.new_tokens, use_cache=False, repeats=args.repeats)
    print(describe_machine())
    params = sum(p.numel() for p in net.parameters())
    print(
        f"{args.ckpt or 'experiment=' + args.experiment}: {params / 1e6:.2f}M parameters, block {net.block_size}, "
        f"{args.new_tokens} new characters, best of {args.repeats}"
    )
    print(f"with the KV cache:               {args.new_tokens / cached_seconds:8,.0f} characters/s")
    print(f"without (recompute the window): {args.new_tokens / recomputed_seconds:8,.0f} characters/s")
    print(f"speed-up: {recomputed_seconds / cached_seconds:.1f}x; same characters: {torch.equal(cached, recomputed)}")


if __name__ == "__main__":
    main()
