#!/usr/bin/env python3
"""A small GPT-style training run whose losses must not depend on the
allocator: scripts/gpu_preload.sh runs it with PYTORCH_NO_CUDA_MEMORY_CACHING=1
(every tensor a cudaMalloc / cudaFree) without and with
LD_PRELOAD=libvmmalloc_preload.so and compares the "result:" lines.

Deterministic settings: fixed seeds, a fixed schedule of (batch, sequence
length) pairs (the changing shapes are what stress an allocator), fp32,
deterministic algorithms, the math attention backend, cuBLAS's fixed
workspace. Prints one "result:" line per step (the loss to 9 digits) and an
"info:" line with tokens/s and the step count.
"""

import argparse
import os
import random
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from torch import nn  # noqa: E402


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, heads: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        pos = torch.arange(seq, device=tokens.device)
        x = self.embed(tokens) + self.pos(pos)
        mask = nn.Transformer.generate_square_subsequent_mask(seq, device=tokens.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(self.norm(x))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU: skipped")
        return 77

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    device = torch.device("cuda")
    max_len = 512
    model = TinyGPT(args.vocab, args.width, args.layers, 6, max_len).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    rng = random.Random(1)
    data = torch.Generator().manual_seed(2)
    schedule = [(rng.randint(2, 16), 32 * rng.randint(1, max_len // 32)) for _ in range(args.steps)]

    tokens_seen = 0
    torch.cuda.synchronize()
    start = time.perf_counter()
    for step, (batch, seq) in enumerate(schedule):
        tokens = torch.randint(0, args.vocab, (batch, seq + 1), generator=data).to(device)
        logits = model(tokens[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, args.vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        print(f"result: step {step} batch {batch} seq {seq} loss {loss.item():.9e}", flush=True)
        tokens_seen += batch * seq
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    print(f"info: {len(schedule)} steps, {tokens_seen / elapsed:.0f} tokens/s, "
          f"caching allocator {'off' if os.environ.get('PYTORCH_NO_CUDA_MEMORY_CACHING') else 'on'}, "
          f"LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}")
    print("torch_training: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
