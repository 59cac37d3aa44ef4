#!/usr/bin/env python3
"""Liger-Kernel's GRPO losses on a GPU, as baselines for msrl's CUDA rows in scripts/gpu_check.sh.

  python3 benchmarks/liger_gpu.py [--tokens 8192] [--vocab 151936] [--hidden 2048] [--reps 10] [--out FILE]
  python3 benchmarks/liger_gpu.py --check-api     # no GPU needed: the installed Liger has the calls used here

Rows (JSON lines):
  liger_triton_grpo_loss_fwd_bwd      liger_kernel.transformers.grpo_loss.triton_grpo_loss on bf16 logits
                                      [B, L+1, V] (B = 8, L = tokens / 8), in place, forward + backward;
                                      GB/s over the minimum traffic (one read of the logits, one write of
                                      their gradient) and its share of a device-to-device copy of the same
                                      size timed in the same run
  liger_fused_linear_grpo_fwd_bwd     liger_kernel.chunked_loss.LigerFusedLinearGRPOLoss: hidden [B, L, H]
                                      x weight [V, H] bf16, forward + backward (d hidden, d weight); TFLOP/s
                                      of 8 N H V (the forward's GEMM, its recomputation and the two backward
                                      GEMMs), against a bf16 GEMM [N, H] x [H, V] timed in the same run
Both use the settings of msrl's verl-preset rows in gpu_check: token-mean aggregation (Liger's "dapo"),
clip 0.2 / 0.2, k3 KL with beta 0.04, temperature 1.
The GPU machine has no network: scripts/gpu_wheels.sh downloads Liger's wheel into .whl/ here, and
gpu_check.sh installs it there when the folder travels with the working tree.
"""
import argparse
import inspect
import json
import sys


def emit(out, row):
    line = json.dumps(row)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def liger_version():
    try:
        from importlib.metadata import version
        return version("liger-kernel")
    except Exception:  # installed without its metadata
        return "unknown"


def check_api():
    from liger_kernel.transformers.grpo_loss import triton_grpo_loss
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    need = {"logits", "old_logp", "ref_logp", "completion_ids", "advantages", "completion_mask", "temperature",
            "beta", "eps_low", "eps_high", "inplace", "loss_type", "reduce"}
    have = set(inspect.signature(triton_grpo_loss).parameters)
    missing = need - have
    init = set(inspect.signature(LigerFusedLinearGRPOLoss.__init__).parameters)
    fwd = set(inspect.signature(LigerFusedLinearGRPOLoss.forward).parameters)
    missing |= {"beta", "epsilon_low", "epsilon_high", "loss_type", "temperature", "use_ref_model"} - init
    missing |= {"_input", "lin_weight", "selected_token_ids", "attention_mask", "advantages", "ref_per_token_logps",
                "old_per_token_logps"} - fwd
    version = liger_version()
    if missing:
        print(json.dumps({"op": "liger_api", "liger_kernel": version, "missing": sorted(missing)}))
        return 1
    print(json.dumps({"op": "liger_api", "liger_kernel": version, "ok": True}))
    return 0


def median_ms(torch, fn, reps):
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for r in range(reps + 2):  # two warm-up calls (Triton autotuning, torch.compile)
        torch.cuda.synchronize()
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        if r >= 2:
            times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default="")
    ap.add_argument("--check-api", action="store_true")
    a = ap.parse_args()
    if a.check_api:
        return check_api()
    try:
        import torch
        from liger_kernel.transformers.grpo_loss import triton_grpo_loss
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss
    except ImportError as e:
        emit(a.out, {"op": "liger", "skipped": f"liger_kernel not importable ({e}); run scripts/gpu_wheels.sh and carry .whl"})
        return 0
    if not torch.cuda.is_available():
        emit(a.out, {"op": "liger", "skipped": "no CUDA device"})
        return 0
    if a.tokens % 8 or a.tokens <= 0 or a.vocab <= 0 or a.hidden <= 0:
        ap.error("--tokens must be a positive multiple of 8; --vocab and --hidden positive")
    dev = torch.device("cuda")
    B, L, V, H = 8, a.tokens // 8, a.vocab, a.hidden
    N = B * L
    g = torch.Generator(device=dev).manual_seed(0)
    ids = torch.randint(0, V, (B, L), device=dev, generator=g)
    mask = torch.ones(B, L, device=dev, dtype=torch.int64)
    adv = torch.randn(B, device=dev, generator=g)
    meta = {"liger_kernel": liger_version(), "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0)}

    # --- Triton GRPO loss on materialised logits
    logits = (torch.randn(B, L + 1, V, device=dev, generator=g) * 2).to(torch.bfloat16)
    with torch.no_grad():
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    old = lp + 0.1 * torch.randn(B, L, device=dev, generator=g)
    ref = lp + 0.1 * torch.randn(B, L, device=dev, generator=g)
    del lp
    x = logits.clone().requires_grad_(True)

    def triton_step():
        x.grad = None
        loss, _ = triton_grpo_loss(x, old, ref, ids, adv, mask, temperature=1.0, beta=0.04, eps_low=0.2, eps_high=0.2,
                                   inplace=True, loss_type="dapo", reduce=True)
        loss.backward()

    t = median_ms(torch, triton_step, a.reps)
    copy_dst = torch.empty_like(logits)
    t_copy = median_ms(torch, lambda: copy_dst.copy_(logits), a.reps)
    del copy_dst
    traffic = 2.0 * logits.numel() * logits.element_size()  # one read + one write of [B, L+1, V] bf16
    emit(a.out, dict(op="liger_triton_grpo_loss_fwd_bwd", shape=[N, V], dtype="bf16", time_ms_median=round(t, 4),
                     GBps=round(traffic / t / 1e6, 1), copy_ms_median=round(t_copy, 4),
                     pct_of_copy_bw=round(100.0 * t_copy / t, 1), **meta))
    del x, logits

    # --- fused linear GRPO loss (chunked, torch.compile'd by Liger)
    h = (torch.randn(B, L, H, device=dev, generator=g) * 0.5).to(torch.bfloat16).requires_grad_(True)
    w = (torch.randn(V, H, device=dev, generator=g) * 0.02).to(torch.bfloat16).requires_grad_(True)
    loss_fn = LigerFusedLinearGRPOLoss(beta=0.04, use_ref_model=True, epsilon_low=0.2, epsilon_high=0.2, loss_type="dapo",
                                       temperature=1.0)

    def fused_step():
        h.grad = None
        w.grad = None
        out = loss_fn(h, w, ids, mask, adv, ref_per_token_logps=ref, old_per_token_logps=old)
        (out[0] if isinstance(out, tuple) else out).backward()

    t_lin = median_ms(torch, fused_step, a.reps)
    h2, wt = h.detach().reshape(N, H), w.detach().t().contiguous()
    t_gemm = median_ms(torch, lambda: h2 @ wt, a.reps)
    flops = 8.0 * N * H * V
    emit(a.out, dict(op="liger_fused_linear_grpo_fwd_bwd", shape=[N, H, V], dtype="bf16", time_ms_median=round(t_lin, 4),
                     TFLOPs=round(flops / t_lin / 1e9, 1), gemm_alone_ms=round(t_gemm, 4),
                     gemm_alone_TFLOPs=round(2.0 * N * H * V / t_gemm / 1e9, 1), **meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
