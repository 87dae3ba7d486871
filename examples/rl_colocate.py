#!/usr/bin/env python3
"""A colocated RL-style loop on one GPU with vmmalloc's sleep and wake
(docs/sleep.md). A trainer (a transformers Llama with AdamW) and a generator
(a small decoder with a static KV cache whose decode step is one CUDA graph,
captured once) take turns; whichever is idle sleeps:

    trainer's weights and optimizer state   tag "train"        offload
    generator's weights                     tag "gen_weights"  offload
    generator's KV cache and graph pool     tag "gen_kv"       discard

Each iteration: wake the trainer, one training step, sleep it; wake the
generator, zero its KV cache (discarded memory is undefined), generate by
replaying the graph, sleep it. The graph is never captured again. With
--no-sleep the same loop runs with nothing asleep (the reference: losses and
tokens must be identical). Weight sync from trainer to generator is not
modelled.

    python examples/rl_colocate.py [--no-sleep] [--iterations N] [--size small|bench]

Prints one JSON line: losses, tokens, the allocator's peak mapped bytes per
phase and for the run, the time of each switch, graph captures.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

import vmmalloc.torch as vt

SIZES = {
    # trainer (hidden, layers, heads, ffn), generator (width, layers, heads), vocab, batch, seq
    "small": dict(train=(256, 2, 4, 688), gen=(256, 2, 4), vocab=1024, batch=4, seq=64,
                  prompt=8, new_tokens=24),
    "bench": dict(train=(2048, 8, 16, 5504), gen=(2048, 8, 16), vocab=32000, batch=8, seq=512,
                  prompt=32, new_tokens=96),
}


def deterministic() -> None:
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.enable_flash_sdp(False)
    torch.backends.cuda.enable_mem_efficient_sdp(False)
    torch.backends.cuda.enable_math_sdp(True)


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads, self.dim = heads, width // heads
        self.ln1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width, bias=False)
        self.proj = torch.nn.Linear(width, width, bias=False)
        self.ln2 = torch.nn.LayerNorm(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, x, pos, k_cache, v_cache):
        b = x.shape[0]
        q, k, v = self.qkv(self.ln1(x)).view(b, 3, self.heads, self.dim).unbind(1)
        k_cache.index_copy_(2, pos, k.unsqueeze(2))
        v_cache.index_copy_(2, pos, v.unsqueeze(2))
        att = (q.unsqueeze(2) @ k_cache.transpose(-1, -2)) / math.sqrt(self.dim)  # [B,H,1,L]
        later = torch.arange(k_cache.shape[2], device=x.device) > pos
        att = att.masked_fill(later, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v_cache).reshape(b, -1))
        return x + self.mlp(self.ln2(x))


class Generator(torch.nn.Module):
    """A decoder that takes one token per sequence and position per call."""

    def __init__(self, vocab: int, width: int, layers: int, heads: int, max_len: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, width)
        self.pos = torch.nn.Embedding(max_len, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def step(self, token, pos, k_cache, v_cache):
        x = self.emb(token) + self.pos(pos)
        for i, blk in enumerate(self.blocks):
            x = blk(x, pos, k_cache[i], v_cache[i])
        return self.head(self.norm(x))


def make_trainer(cfg: dict):
    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, layers, heads, ffn = cfg["train"]
    config = LlamaConfig(vocab_size=cfg["vocab"], hidden_size=hidden, intermediate_size=ffn,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=cfg["seq"])
    config._attn_implementation = "eager"  # deterministic backward
    return LlamaForCausalLM(config)


class Run:
    def __init__(self, cfg: dict, sleeping: bool):
        self.cfg, self.sleeping = cfg, sleeping
        self.switch_s: list[float] = []
        self.phase_peaks = {"train": 0, "gen": 0}
        self.captures = 0
        with vt.tag("train"):
            self.trainer = make_trainer(cfg).cuda()
            self.opt = torch.optim.AdamW(self.trainer.parameters(), lr=1e-4)
        width, layers, heads = cfg["gen"]
        max_len = cfg["prompt"] + cfg["new_tokens"]
        b = cfg["batch"]
        with vt.tag("gen_weights"):
            self.gen = Generator(cfg["vocab"], width, layers, heads, max_len).cuda().eval()
        with vt.tag("gen_kv"):
            shape = (layers, b, heads, max_len, width // heads)
            self.k_cache = torch.zeros(shape, device="cuda")
            self.v_cache = torch.zeros(shape, device="cuda")
            self.token = torch.zeros(b, dtype=torch.long, device="cuda")
            self.pos = torch.zeros(1, dtype=torch.long, device="cuda")
        self.capture()
        self.data = torch.Generator().manual_seed(1)
        self.prompts = torch.Generator().manual_seed(2)
        if sleeping:
            self.switch(sleep=["gen_weights", "gen_kv"], wake=[])

    def capture(self) -> None:
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the capture
                    self.gen.step(self.token, self.pos, self.k_cache, self.v_cache)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with vt.tag("gen_kv"):  # the graph's pool sleeps with the KV cache
                with torch.cuda.graph(self.graph):
                    self.logits = self.gen.step(self.token, self.pos, self.k_cache, self.v_cache)
        self.captures += 1

    def switch(self, sleep: list[str], wake: list[str]) -> None:
        """Puts `sleep` to sleep and wakes `wake`; timed as one switch."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        vt.empty_cache()  # the idle phase's activations (untagged, cached) go too
        for tag in sleep:
            vt.sleep(tag, "discard" if tag == "gen_kv" else "offload")
        if wake:
            vt.wake(wake, keep_host=True)
        torch.cuda.synchronize()
        self.switch_s.append(time.perf_counter() - t0)

    def peak(self, phase: str) -> None:
        torch.cuda.synchronize()
        peak = vt.memory_stats()["peak_reserved_bytes"]
        self.phase_peaks[phase] = max(self.phase_peaks[phase], peak)

    def train_step(self) -> float:
        cfg = self.cfg
        tokens = torch.randint(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), generator=self.data).cuda()
        vt.reset_peak_memory_stats()
        loss = self.trainer(input_ids=tokens, labels=tokens).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        with vt.tag("train"):
            self.opt.step()  # AdamW's state is made at the first step: tagged
        self.opt.zero_grad(set_to_none=True)
        value = loss.item()
        del loss
        self.peak("train")
        return value

    def generate(self) -> list[list[int]]:
        cfg = self.cfg
        b = cfg["batch"]
        prompt = torch.randint(0, cfg["vocab"], (b, cfg["prompt"]), generator=self.prompts).cuda()
        vt.reset_peak_memory_stats()
        self.k_cache.zero_()  # discarded while asleep: refilled, as vLLM does
        self.v_cache.zero_()
        out = []
        nxt = prompt[:, 0]
        for p in range(cfg["prompt"] + cfg["new_tokens"] - 1):
            self.token.copy_(prompt[:, p] if p < cfg["prompt"] else nxt)
            self.pos.fill_(p)
            self.graph.replay()
            nxt = self.logits.argmax(-1)
            if p >= cfg["prompt"] - 1:
                out.append(nxt.clone())
        self.peak("gen")
        return torch.stack(out, 1).tolist()

    def iterate(self) -> tuple[float, list[list[int]]]:
        if self.sleeping:
            self.switch(sleep=[], wake=["train"])
        loss = self.train_step()
        if self.sleeping:
            self.switch(sleep=["train"], wake=["gen_weights", "gen_kv"])
        tokens = self.generate()
        if self.sleeping:
            self.switch(sleep=["gen_weights", "gen_kv"], wake=[])
        return loss, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-sleep", action="store_true", help="the reference: nothing sleeps")
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    args = ap.parse_args()
    vt.install()
    deterministic()
    run = Run(SIZES[args.size], sleeping=not args.no_sleep)
    losses, tokens = [], []
    for _ in range(args.iterations):
        loss, toks = run.iterate()
        losses.append(loss)
        tokens.append(toks)
    print(json.dumps({
        "sleeping": run.sleeping,
        "size": args.size,
        "iterations": args.iterations,
        "losses": losses,
        "tokens": tokens,
        "phase_peak_bytes": run.phase_peaks,
        "peak_device_bytes": max(run.phase_peaks.values()),
        "switch_s": [round(s, 4) for s in run.switch_s],
        "graph_captures": run.captures,
    }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
