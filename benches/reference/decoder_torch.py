"""PyTorch twin of datamix-decoder's training step (`small` preset by default; `m130`
for benches/decoder-gpu.sh), and the machine's sgemm peak, for benches/decoder.sh.

Same architecture and step as the Rust bench: parallel blocks from one shared
RMSNorm, multi-query attention (1 kv head) with RoPE, SwiGLU MLP (4x), no
biases, tied embeddings; AdamW (0.9, 0.95, wd 0.1 on matrices), global-norm
clipping at 1.0; batch 8 x 256 tokens by default. Prints JSON lines. `--device cuda`
runs it (and the sgemm peak, 8192^3) on the GPU, in float32 (TF32 off, torch's default).

`--unfused` swaps PyTorch's fused kernels for the composites Burn records under
autodiff (attention as matmul + masked softmax + matmul, the loss as
log_softmax + gather), to measure what those fused kernels are worth.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


UNFUSED = False


class Block(nn.Module):
    def __init__(self, d, n_heads, n_kv, hidden, rope):
        super().__init__()
        self.norm = nn.RMSNorm(d, eps=1e-5)
        self.hd = d // n_heads
        self.nh, self.nkv = n_heads, n_kv
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)
        self.rope = rope

    def rotate(self, x):  # x: [b, h, s, hd], interleaved pairs like Burn's RotaryEncoding
        cos, sin = self.rope
        s = x.shape[2]
        x2 = x.unflatten(-1, (-1, 2))
        a, b = x2[..., 0], x2[..., 1]
        c, n = cos[:s], sin[:s]
        return torch.stack((a * c - b * n, a * n + b * c), dim=-1).flatten(-2)

    def forward(self, x):
        b, s, d = x.shape
        h = self.norm(x)
        q = self.q_proj(h).view(b, s, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, s, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, s, self.nkv, self.hd).transpose(1, 2)
        q, k = self.rotate(q), self.rotate(k)
        k = k.expand(b, self.nh, s, self.hd)
        v = v.expand(b, self.nh, s, self.hd)
        if UNFUSED:
            w = (q @ k.transpose(-2, -1)) / math.sqrt(self.hd)
            w = w.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf"))
            a = w.softmax(-1) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = self.o_proj(a.transpose(1, 2).reshape(b, s, d))
        m = self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))
        return x + a + m


class Decoder(nn.Module):
    def __init__(self, vocab, d, layers, heads, seq, device="cpu"):
        super().__init__()
        hd = d // heads
        theta = 10000.0 ** (-torch.arange(0, hd, 2, device=device).float() / hd)
        ang = torch.arange(seq, device=device).float()[:, None] * theta[None, :]
        rope = (ang.cos(), ang.sin())
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, heads, 1, 4 * d, rope) for _ in range(layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, x):
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h) @ self.embed.weight.t()


# d_model and heads of the decoder crate's presets (DecoderConfig::preset).
PRESETS = {"small": (256, 8), "m130": (768, 12)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sgemm_peak(device, n=2048, reps=10):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--layers", type=int, default=None, help="default: the preset's (small 8, m130 12)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--unfused", action="store_true")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    global UNFUSED
    UNFUSED = args.unfused
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = 8192 if device.type == "cuda" else 2048
    print(json.dumps({"impl": "sgemm-peak-torch", "device": args.device, "threads": args.threads, "gflops": sgemm_peak(device, n) / 1e9}))
    (d, heads), batch, seq = PRESETS[args.preset], args.batch, args.seq
    layers = args.layers or {"small": 8, "m130": 12}[args.preset]
    model = Decoder(args.vocab, d, layers, heads, seq, device).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    data = torch.randint(0, args.vocab, (args.steps + 2, batch, seq + 1), device=device)

    def step(i):
        x, y = data[i, :, :-1], data[i, :, 1:]
        logits = model(x)
        if UNFUSED:
            lp = logits.reshape(-1, args.vocab).log_softmax(-1)
            loss = -lp.gather(1, y.reshape(-1, 1)).mean()
        else:
            loss = F.cross_entropy(logits.reshape(-1, args.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    step(0)
    step(1)
    sync(device)
    t = time.perf_counter()
    for i in range(args.steps):
        step(i + 2)
    sync(device)
    secs = time.perf_counter() - t
    print(json.dumps({
        "impl": "pytorch-unfused" if UNFUSED else "pytorch", "torch": torch.__version__, "device": args.device,
        "preset": args.preset, "d_model": d, "params": params, "batch": batch, "seq": seq,
        "layers": layers, "vocab": args.vocab, "steps": args.steps,
        "tokens_per_s": args.steps * batch * seq / secs,
    }))


if __name__ == "__main__":
    main()
