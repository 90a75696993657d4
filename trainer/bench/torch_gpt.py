"""PyTorch twin of trainer/recipe/src/model.rs + optim.rs (AdamW) for the throughput benchmarks
(bench.sh on CPU, gpu_bench.sh on CUDA).

Same architecture (embedding, RoPE, weight-free pre-norm RMSNorm, QK-norm, causal attention,
ReLU^2 MLP, untied head, logit soft-cap), same config file, same batch shape, same optimizer
(AdamW, global-norm clipping), random windows of the byte-level training stream.
On CUDA: f32 parameters and optimizer state, bf16 autocast (`--dtype bf16`), fused AdamW,
attention through F.scaled_dot_product_attention (flash attention; `--attention manual` for
the explicit softmax), optionally `--compile` (torch.compile).
Prints one JSON object: tokens_per_s (after `--warmup` steps), peak_mem_bytes, steps, tokens,
final_loss, flops_per_token.
"""

import argparse
import json
import math
import pathlib
import resource
import time
import tomllib

import torch
import torch.nn as nn
import torch.nn.functional as F


def rms_norm(x, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rope_tables(seq_len, head_dim, base=10_000.0):
    half = head_dim // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) / half)
    angle = torch.arange(seq_len, dtype=torch.float64)[:, None] * freq[None, :]
    return angle.cos().float(), angle.sin().float()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, d, heads, depth):
        super().__init__()
        self.heads = heads
        std_in = 1 / math.sqrt(d)
        std_out = std_in / math.sqrt(2 * depth)
        self.wq = nn.Parameter(torch.randn(d, d) * std_in)
        self.wk = nn.Parameter(torch.randn(d, d) * std_in)
        self.wv = nn.Parameter(torch.randn(d, d) * std_in)
        self.wo = nn.Parameter(torch.randn(d, d) * std_out)
        self.w_fc = nn.Parameter(torch.randn(d, 4 * d) * std_in)
        self.w_proj = nn.Parameter(torch.randn(4 * d, d) * std_out / 2)

    def attention(self, x, cos, sin, mask):
        b, t, d = x.shape
        h, hd = self.heads, d // self.heads

        def split(w):
            return (x @ w).view(b, t, h, hd).transpose(1, 2)

        q = apply_rope(rms_norm(split(self.wq)), cos, sin)
        k = apply_rope(rms_norm(split(self.wk)), cos, sin)
        v = split(self.wv)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
            y = torch.softmax(scores, dim=-1) @ v
        return y.transpose(1, 2).reshape(b, t, d) @ self.wo

    def forward(self, x, cos, sin, mask):
        x = x + self.attention(rms_norm(x), cos, sin, mask)
        return x + (F.relu(rms_norm(x) @ self.w_fc).square() @ self.w_proj)


class Gpt(nn.Module):
    def __init__(self, m, sdpa=False):
        super().__init__()
        d, v = m["width"], m["vocab_size"]
        self.softcap = m["softcap"]
        self.sdpa = sdpa
        self.wte = nn.Parameter(torch.randn(v, d))
        self.blocks = nn.ModuleList(Block(d, m["heads"], m["depth"]) for _ in range(m["depth"]))
        self.lm_head = nn.Parameter(torch.randn(d, v) * 0.5 / math.sqrt(d))
        cos, sin = rope_tables(m["seq_len"], d // m["heads"])
        self.register_buffer("cos", cos)
        self.register_buffer("sin", sin)

    def forward(self, idx):
        t = idx.shape[1]
        cos, sin = self.cos[:t], self.sin[:t]
        mask = None if self.sdpa else torch.full((t, t), float("-inf"), device=idx.device).triu(1)
        x = rms_norm(self.wte[idx])
        for block in self.blocks:
            x = block(x, cos, sin, mask)
        logits = rms_norm(x) @ self.lm_head
        if self.softcap > 0:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits


def train_tokens(data_dir, limit_docs):
    # Byte tokens with a BOS (256) before each document, like the Rust data loader.
    out = []
    for path in sorted(pathlib.Path(data_dir).glob("*.txt"))[:limit_docs]:
        out.append(256)
        out.extend(path.read_bytes())
    return torch.tensor(out, dtype=torch.long)


def flops_per_token(m):
    # Same formula as Gpt::flops_per_token in model.rs (nanochat's estimate).
    d, v, l, t = m["width"], m["vocab_size"], m["depth"], m["seq_len"]
    return 6 * (l * 12 * d * d + d * v) + 12 * l * d * t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=0, help="untimed steps first")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--attention", choices=["auto", "sdpa", "manual"], default="auto")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = tomllib.loads(pathlib.Path(args.config).read_text())
    m, o, tr = cfg["model"], cfg["optim"], cfg["train"]
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sdpa = args.attention == "sdpa" or (args.attention == "auto" and cuda)
    tokens = train_tokens(args.data, 38).to(device)
    model = Gpt(m, sdpa=sdpa).to(device)
    embed = [model.wte, model.lm_head]
    matrices = [p for b in model.blocks for p in b.parameters()]
    opt = torch.optim.AdamW(
        [
            {"params": embed, "lr": o["embed_lr"], "weight_decay": 0.0},
            {"params": matrices, "lr": o["lr"], "weight_decay": o["weight_decay"]},
        ],
        betas=(o["beta1"], o["beta2"]),
        eps=1e-8,
        **({"fused": True} if cuda else {}),
    )
    forward = torch.compile(model) if args.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    bsz, t = tr["batch_size"], m["seq_len"]
    window = torch.arange(t + 1, device=device)

    def step():
        offsets = torch.randint(0, len(tokens) - t - 1, (bsz,), device=device)
        xy = tokens[offsets[:, None] + window]
        x, y = xy[:, :-1], xy[:, 1:]
        with autocast:
            logits = forward(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o["grad_clip"])
        opt.step()
        return loss

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    loss = None
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - start
    n_tokens = args.steps * bsz * t
    if cuda:
        # The caching allocator's peak (the CUDA context, ~0.5 GiB, is not included).
        peak = torch.cuda.max_memory_reserved()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "tokens_per_s": n_tokens / elapsed,
                "peak_mem_bytes": peak,
                "steps": args.steps,
                "tokens": n_tokens,
                "final_loss": loss.item(),
                "flops_per_token": flops_per_token(m),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name() if cuda else "cpu",
                "dtype": args.dtype,
                "attention": "sdpa" if sdpa else "manual",
                "compile": args.compile,
            }
        )
    )


if __name__ == "__main__":
    main()
