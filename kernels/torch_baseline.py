"""Baselines for the GPU kernels, measured in the same run as kernels/gpu_check.cu: torch eager
and torch.compile of the selective log-softmax (the TRL / verl formulation: fp32 upcast,
log_softmax, gather) and of the GRPO loss forward+backward (verl-style token ratio, clip 0.2,
k3 KL with beta 0.04, token-mean). Liger-Kernel's Triton GRPO loss is timed when importable.
Prints JSON lines. Usage: python3 kernels/torch_baseline.py [--no-compile]"""
import json, sys, time
import torch

def median_ms(fn, reps=15):
    fn(); fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); b.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]

def selective(x, y):
    return torch.log_softmax(x.float(), dim=-1).gather(-1, y[:, None]).squeeze(-1)

def grpo_loss(x, y, old, ref, adv, mask):
    lp = selective(x, y)
    ratio = torch.exp(lp - old)
    s1 = ratio * adv
    s2 = torch.clamp(ratio, 0.8, 1.2) * adv
    pg = -torch.minimum(s1, s2)
    d = ref - lp
    kl = torch.exp(d) - d - 1
    per = pg + 0.04 * kl
    return (per * mask).sum() / mask.sum()

def line(**kw):
    print(json.dumps(kw), flush=True)

def main():
    compile_ = "--no-compile" not in sys.argv
    dev = torch.device("cuda")
    line(device=torch.cuda.get_device_name(0), torch=torch.__version__)
    sel_c = torch.compile(selective) if compile_ else None
    loss_c = torch.compile(grpo_loss) if compile_ else None
    liger = None
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss  # noqa: F401
        from liger_kernel.ops.grpo_loss import triton_grpo_loss  # type: ignore
        liger = triton_grpo_loss
    except Exception as e:  # not installed on the machine
        line(note="liger-kernel not available: %s" % type(e).__name__)
    for dtype, N in ((torch.bfloat16, 8192), (torch.float32, 4096)):
        V = 151936
        g = torch.Generator(device=dev).manual_seed(0)
        x = (torch.randn(N, V, device=dev, generator=g) * 3).to(dtype)
        y = torch.randint(0, V, (N,), device=dev, generator=g)
        nb = N * V * x.element_size()
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        t = median_ms(lambda: selective(x, y))
        line(bench="torch_eager_forward", dtype=name, shape=[N, V], time_ms_median=t, GBps=nb / t / 1e6)
        if sel_c and dtype == torch.bfloat16:  # compile once (bf16, the headline shape) to bound the run
            t0 = time.time(); sel_c(x, y); torch.cuda.synchronize(); ct = time.time() - t0
            t = median_ms(lambda: sel_c(x, y))
            line(bench="torch_compile_forward", dtype=name, shape=[N, V], time_ms_median=t, GBps=nb / t / 1e6, compile_s=ct)
        old = torch.full((N,), -11.5, device=dev) + 0.2 * torch.randn(N, device=dev, generator=g)
        ref = old.clone()
        adv = torch.randn(N, device=dev, generator=g)
        mask = torch.ones(N, device=dev)
        xg = x.clone().requires_grad_(True)
        def step(fn):
            xg.grad = None
            fn(xg, y, old, ref, adv, mask).backward()
        t = median_ms(lambda: step(grpo_loss), reps=7)
        line(bench="torch_eager_grpo_loss_fwd_bwd", dtype=name, shape=[N, V], time_ms_median=t, GBps=2 * nb / t / 1e6)
        if loss_c and dtype == torch.bfloat16:
            t0 = time.time(); step(loss_c); torch.cuda.synchronize(); ct = time.time() - t0
            t = median_ms(lambda: step(loss_c), reps=7)
            line(bench="torch_compile_grpo_loss_fwd_bwd", dtype=name, shape=[N, V], time_ms_median=t, GBps=2 * nb / t / 1e6, compile_s=ct)
        del xg, x
        torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
