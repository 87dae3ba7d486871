#!/usr/bin/env python3
"""Record allocation traces of transformers workloads on the GPU.

Each workload runs a transformers model (built from a config, random
weights: no network, no checkpoint) under
`torch.cuda.memory._record_memory_history`, takes the snapshot's
`device_traces`, keeps the `alloc` and `free_completed` events and writes
them in the trace format of docs/benchmarks.md: a '#' header line, then one
event a line, `a|f <addr hex> <size> <stream>`, gzip-compressed.

Streams are numbered in order of appearance, the default stream (0) staying
0. Events of blocks allocated before the recording started (none, normally:
recording starts before the model is built) are dropped, as are frees whose
block was never seen.

Workloads (`--workload`, or all of them with `--all`):

  llama-train     LlamaForCausalLM (12 layers, hidden 1024, vocab 32000),
                  AdamW, bf16 autocast; every step a random batch (1-16) and
                  sequence length (64-1024)
  bert-mlm-train  BertForMaskedLM (12 layers, hidden 768), AdamW, bf16
                  autocast; random batch (4-48) and sequence length (32-512)
  llama-generate  LlamaForCausalLM in bf16 (8 layers, hidden 1024), inference:
                  `generate` (greedy, KV cache) for requests of random batch
                  (1-32), prompt length (16-512) and new tokens (16-64)

Python standard library + torch + transformers.

    python3 bench/record_trace.py --all --out-dir bench/traces
    python3 bench/record_trace.py --workload llama-train --steps 20 --out x.trace.gz
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import random
import sys
import time


def convert(entries: list[dict], header: str) -> tuple[str, dict]:
    """device_traces entries -> trace text, and a summary."""
    streams = {0: 0}
    live: dict[int, int] = {}
    lines = [header]
    cur = peak = allocs = frees = dropped = 0
    for e in entries:
        action = e.get("action")
        if action not in ("alloc", "free_completed"):
            continue
        addr = int(e["addr"])
        size = int(e["size"])
        raw_stream = int(e.get("stream", 0))
        if raw_stream not in streams:
            streams[raw_stream] = len(streams)
        stream = streams[raw_stream]
        if action == "alloc":
            if addr in live:
                raise SystemExit(f"record_trace: allocation at live address {addr:x}")
            live[addr] = size
            cur += size
            peak = max(peak, cur)
            allocs += 1
            lines.append(f"a {addr:x} {size} {stream}")
        else:
            if addr not in live:
                dropped += 1
                continue
            size = live.pop(addr)  # the allocation's size names the block
            cur -= size
            frees += 1
            lines.append(f"f {addr:x} {size} {stream}")
    summary = {"events": allocs + frees, "allocs": allocs, "frees": frees, "dropped_frees": dropped,
               "peak_live_bytes": peak, "final_live_bytes": cur, "streams": len(streams)}
    return "\n".join(lines) + "\n", summary


def llama_train(torch, steps: int, rng: random.Random) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                      num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=16,
                      max_position_embeddings=2048)
    model = LlamaForCausalLM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(steps):
        b, s = rng.randint(1, 16), rng.randint(64, 1024)
        ids = torch.randint(0, cfg.vocab_size, (b, s), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    del model, opt
    return f"LlamaForCausalLM 12x1024 train, AdamW, bf16 autocast, {steps} steps, batch 1-16, seq 64-1024"


def bert_mlm_train(torch, steps: int, rng: random.Random) -> str:
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512)
    model = BertForMaskedLM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(steps):
        b, s = rng.randint(4, 48), rng.randint(32, 512)
        ids = torch.randint(0, cfg.vocab_size, (b, s), device="cuda")
        labels = torch.where(torch.rand((b, s), device="cuda") < 0.15, ids, torch.full_like(ids, -100))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    del model, opt
    return f"BertForMaskedLM 12x768 MLM train, AdamW, bf16 autocast, {steps} steps, batch 4-48, seq 32-512"


def llama_generate(torch, steps: int, rng: random.Random) -> str:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                      num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=16,
                      max_position_embeddings=2048, pad_token_id=0)
    model = LlamaForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        for _ in range(steps):
            b, s, n = rng.randint(1, 32), rng.randint(16, 512), rng.randint(16, 64)
            ids = torch.randint(3, cfg.vocab_size, (b, s), device="cuda")
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                           min_new_tokens=n, do_sample=False, pad_token_id=0)
    torch.cuda.synchronize()
    del model
    return (f"LlamaForCausalLM 8x1024 bf16 generate (greedy, KV cache), {steps} requests, "
            "batch 1-32, prompt 16-512, new tokens 16-64")


WORKLOADS = {
    "llama-train": (llama_train, 24),
    "bert-mlm-train": (bert_mlm_train, 30),
    "llama-generate": (llama_generate, 12),
}


def record(torch, name: str, steps: int | None, seed: int, out: str) -> dict:
    fn, default_steps = WORKLOADS[name]
    steps = steps or default_steps
    rng = random.Random(seed)
    torch.manual_seed(seed)
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python",
                                             max_entries=50_000_000)
    t0 = time.time()
    try:
        what = fn(torch, steps, rng)
        gc.collect()
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    dev = torch.cuda.current_device()
    entries = snap["device_traces"][dev]
    header = (f"# op addr_hex size stream; a=alloc f=free; recorded from "
              f"torch.cuda.memory._record_memory_history by bench/record_trace.py: {name}: {what}; "
              f"seed {seed}; torch {torch.__version__}; {torch.cuda.get_device_name(dev)}")
    text, summary = convert(entries, header)
    with gzip.open(out, "wt", compresslevel=9) as f:
        f.write(text)
    summary.update({"workload": name, "out": out, "record_s": round(time.time() - t0, 1),
                    "gz_bytes": os.path.getsize(out)})
    gc.collect()
    torch.cuda.empty_cache()
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", choices=sorted(WORKLOADS), help="one workload")
    ap.add_argument("--all", action="store_true", help="every workload")
    ap.add_argument("--steps", type=int, default=None, help="steps/requests (default: per workload)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", help="output file for --workload (default: <out-dir>/<workload>.trace.gz)")
    ap.add_argument("--out-dir", default="bench/traces")
    args = ap.parse_args()
    if bool(args.all) == bool(args.workload):
        ap.error("give --workload NAME or --all")
    import torch

    if not torch.cuda.is_available():
        print("record_trace: no CUDA device", file=sys.stderr)
        return 1
    names = sorted(WORKLOADS) if args.all else [args.workload]
    os.makedirs(args.out_dir, exist_ok=True)
    for name in names:
        out = args.out if (args.out and not args.all) else os.path.join(args.out_dir, f"{name}.trace.gz")
        s = record(torch, name, args.steps, args.seed, out)
        print(f"record_trace: {name}: {s['events']} events ({s['allocs']} allocs, {s['frees']} frees, "
              f"{s['dropped_frees']} frees dropped), {s['streams']} streams, peak live "
              f"{s['peak_live_bytes']} B ({s['peak_live_bytes'] / 2**30:.2f} GiB), live at end "
              f"{s['final_live_bytes']} B, {s['gz_bytes']} B gz, {s['record_s']} s -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
