"""PyTorch CPU baselines for msrl's benchmarks: torch eager and torch.compile of the same formulas,
on the same shapes and with the same input construction as the msrl runners, timed in the same
run of scripts/bench.sh. Prints one JSON line per (op, dtype, mode):

  {"op", "shape", "dtype", "threads", "mode": "eager"|"compile", "time_ms", "reps",
   "torch_version", ["compile_s", "matches_eager", "max_abs_diff_vs_eager"], ["error"]}

"op" is the msrl runner's own "op" field, so benchmarks/bench_report.py joins on (op, dtype,
threads). time_ms is the median over --reps timed repetitions after warm-up; for "compile" the
warm-up includes the compilation (reported apart as compile_s, never timed). A compile that fails
prints its line with time_ms null and the error, and the run goes on.

Ops (formulas of the libtorch baselines compiled into the msrl runners, so all four columns time
the same arithmetic):
  grpo_advantages+loss+grad        benchmarks/bench_grpo.cpp: B x T = 128 x 1,024 fp32, G = 8, group
                                   mean / (unbiased std + 1e-4), ratio exp(logp - old), clip 0.2/0.2
                                   (no dual clip), k3 KL beta 0.04, per-sequence token mean then
                                   batch mean, autograd d loss / d logp. Mask: row b has
                                   T/2 + (b*37) % (T/2) ones (~75 %), exactly as bench_grpo builds it.
  selective_log_softmax_forward    benchmarks/kernels/bench_kernels.cpp: N x V = 512 x 151,936,
                                   log_softmax(x, fp32 accumulation) + gather, no grad; fp32 and bf16.
  selective_log_softmax_backward   same, forward + autograd backward of sum(log-prob) (msrl's row
                                   times its backward alone, given the forward's lse).
  grpo_loss_from_logits_fwd_bwd    same N x V, fp32 and bf16 logits: log-prob from logits, ratio,
                                   clip 0.2/0.2, k3 KL (d clamped to [-20, 20], KL to [-10, 10]) beta
                                   0.04, token mean over B = 8 sequences x N/8 tokens, all unmasked,
                                   autograd backward to the logits.
  linear_selective_log_softmax_forward / _fwd_bwd
                                   hidden [128, 512] @ W[151,936, 512]^T, log_softmax, gather;
                                   fwd_bwd: backward of sum(log-prob * g) to hidden and W.
  linear_grpo_loss_fwd_bwd         the same matmul + log_softmax + gather, then the GRPO loss of
                                   grpo_loss_from_logits_fwd_bwd (8 sequences x 16 tokens), autograd
                                   backward to hidden and W (Liger's fused linear GRPO loss, eager).

Usage: torch_baselines.py [--threads 2] [--reps 7] [--grpo-reps 51] [--linear-reps 3]
                          [--ops a,b,...] [--modes eager,compile] [--quick]
"""
import argparse
import gc
import json
import os
import sys
import time

import torch

OPS = (
    "grpo_advantages+loss+grad",
    "selective_log_softmax_forward",
    "selective_log_softmax_backward",
    "grpo_loss_from_logits_fwd_bwd",
    "linear_selective_log_softmax_forward",
    "linear_selective_log_softmax_fwd_bwd",
    "linear_grpo_loss_fwd_bwd",
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def grpo_loss_of_logp(lpx, told, tref, tadv):
    """The loss rows' GRPO loss on per-token log-probs: clip 0.2 / 0.2, k3 KL (d clamped to
    [-20, 20], KL to [-10, 10]) with beta 0.04, mean over every token."""
    ratio = torch.exp(lpx - told)
    pg = -torch.minimum(ratio * tadv, torch.clamp(ratio, 0.8, 1.2) * tadv)
    d = (tref - lpx).clamp(-20, 20)
    kl = (torch.exp(d) - d - 1).clamp(-10, 10)
    return (pg + 0.04 * kl).mean()


def median_ms(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        a = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - a) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def emit(**kw):
    print(json.dumps(kw), flush=True)


class Runner:
    def __init__(self, args):
        self.args = args
        self.threads = args.threads
        self.version = torch.__version__

    def time_modes(self, op, shape, dtype, fn, inputs, reps, no_grad, step=None):
        """Times fn(*inputs) eagerly and torch.compile(fn)(*inputs). step(f) runs one repetition
        (e.g. forward + backward) and returns its result (output or gradient); by default it is a
        plain call. The compiled result is compared with the eager one (matches_eager)."""
        step = step or (lambda f: f(*inputs))
        eager_out = None
        for mode in self.args.modes:
            rec = dict(op=op, shape=list(shape), dtype=dtype, threads=self.threads, mode=mode, time_ms=None, reps=reps,
                       torch_version=self.version)
            try:
                f = fn
                warmup = 1
                if mode == "compile":
                    torch._dynamo.reset()
                    f = torch.compile(fn, dynamic=False)
                    t0 = time.perf_counter()
                    with torch.no_grad() if no_grad else _null():
                        step(f)  # compiles forward (and backward) graphs; not timed
                    rec["compile_s"] = round(time.perf_counter() - t0, 2)
                with torch.no_grad() if no_grad else _null():
                    rec["time_ms"] = round(median_ms(lambda: step(f), reps, warmup), 4)
                    out = step(f).detach()
                if mode == "eager":
                    eager_out = out
                elif eager_out is not None:  # the compiled graph computes what eager does
                    diff = (out.double() - eager_out.double()).abs().max().item()
                    scale = eager_out.double().abs().max().item()
                    rec["max_abs_diff_vs_eager"] = float("%.3g" % diff)
                    rec["matches_eager"] = bool(diff <= (2e-2 if dtype == "bf16" else 1e-3) * scale + 1e-12)
                del out
            except Exception as e:  # a compile failure on this CPU / toolchain: recorded, not fatal
                rec["error"] = "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[0][:300] if str(e).strip() else "")
            emit(**rec)
            gc.collect()

    # --- 1. GRPO core: advantages + loss + d loss / d logp (bench_grpo.cpp) ---------------------
    def grpo_core(self):
        B, T, G = 128, 1024, 8
        g = torch.Generator().manual_seed(1)
        lp = -1.0 + 0.5 * torch.randn(B, T, generator=g)
        old = lp + 0.1 * torch.randn(B, T, generator=g)
        ref = lp + 0.2 * torch.randn(B, T, generator=g)
        rewards = torch.where(torch.randn(B, generator=g) > 0, 1.2, 0.2)
        L = torch.tensor([T // 2 + (b * 37) % (T // 2) for b in range(B)])
        mask = (torch.arange(T)[None, :] < L[:, None]).to(torch.float32)
        beta, clip_low, clip_high = 0.04, 0.2, 0.2

        def loss_fn(x, told, tref, tr, tm):
            grp = tr.view(-1, G)
            a = ((grp - grp.mean(1, keepdim=True)) / (grp.std(1, unbiased=True, keepdim=True) + 1e-4)).view(-1, 1)
            coef1 = torch.exp(x - told)
            coef2 = torch.clamp(coef1, 1 - clip_low, 1 + clip_high)
            per_tok = -torch.min(coef1 * a, coef2 * a)
            d = tref - x
            per_tok = per_tok + beta * (torch.exp(d) - d - 1)
            return ((per_tok * tm).sum(1) / tm.sum(1).clamp_min(1.0)).mean()

        def step(f):
            x = lp.detach().requires_grad_(True)
            f(x, old, ref, rewards, mask).backward()
            return x.grad

        self.time_modes("grpo_advantages+loss+grad", (B, T), "fp32", loss_fn, None, self.args.grpo_reps, False, step)

    # --- 2./3. selective log-softmax and GRPO loss from logits (bench_kernels.cpp) ----------------
    def logits(self, ops):
        N, V = self.args.rows, self.args.vocab
        g = torch.Generator().manual_seed(1)
        x32 = 3.0 * torch.randn(N, V, generator=g)
        y = torch.randint(0, V, (N, 1), generator=g)

        def selective(x, yy):
            return torch.log_softmax(x, -1, dtype=torch.float32).gather(-1, yy)

        for dt in self.args.dtypes:
            x = x32 if dt == "fp32" else x32.to(DTYPES[dt])
            if "selective_log_softmax_forward" in ops:
                self.time_modes("selective_log_softmax_forward", (N, V), dt, selective, (x, y), self.args.reps, True)
            if "selective_log_softmax_backward" in ops and dt == "fp32":  # msrl times fp32 only
                xg = x.clone().requires_grad_(True)

                def bwd_fn(xx, yy):
                    return selective(xx, yy).sum()

                def bwd_step(f, xg=xg):
                    xg.grad = None
                    f(xg, y).backward()
                    return xg.grad

                self.time_modes("selective_log_softmax_backward", (N, V), dt, bwd_fn, None, self.args.reps, False, bwd_step)
                del xg
            if "grpo_loss_from_logits_fwd_bwd" in ops:
                B = 8
                T = N // B
                with torch.no_grad():
                    lp = selective(x, y).squeeze(-1)
                old = (lp + 0.1 * torch.randn(N, generator=g)).contiguous()
                ref = old.clone()
                adv = torch.randn(B, 1, generator=g).expand(B, T).reshape(-1).contiguous()
                xg = x.clone().requires_grad_(True)

                def grpo_loss(xx, yy, told, tref, tadv):
                    return grpo_loss_of_logp(selective(xx, yy).squeeze(-1), told, tref, tadv)

                def loss_step(f, xg=xg):
                    xg.grad = None
                    f(xg, y, old, ref, adv).backward()
                    return xg.grad

                self.time_modes("grpo_loss_from_logits_fwd_bwd", (N, V), dt, grpo_loss, None, self.args.reps, False, loss_step)
                del xg
            del x
            gc.collect()

    # --- 4. fused linear log-prob (bench_kernels.cpp, MSRL_BENCH_EIGEN) --------------------------
    def linear(self, ops):
        NL, HL, V = 128, 512, self.args.vocab
        g = torch.Generator().manual_seed(2)
        h = torch.randn(NL, HL, generator=g)
        w = torch.randn(V, HL, generator=g) / 10.0
        y = torch.randint(0, V, (NL, 1), generator=g)
        gl = torch.randn(NL, 1, generator=g)

        def fwd(hh, ww, yy):
            return torch.log_softmax(torch.matmul(hh, ww.t()), -1).gather(-1, yy)

        if "linear_selective_log_softmax_forward" in ops:
            self.time_modes("linear_selective_log_softmax_forward", (NL, HL, V), "fp32", fwd, (h, w, y), self.args.linear_reps, True)
        if "linear_selective_log_softmax_fwd_bwd" in ops:
            hg, wg = h.clone().requires_grad_(True), w.clone().requires_grad_(True)

            def fb(hh, ww, yy, gg):
                return (fwd(hh, ww, yy) * gg).sum()

            def step(f):
                hg.grad = None
                wg.grad = None
                f(hg, wg, y, gl).backward()
                return wg.grad

            self.time_modes("linear_selective_log_softmax_fwd_bwd", (NL, HL, V), "fp32", fb, None, self.args.linear_reps, False, step)
        if "linear_grpo_loss_fwd_bwd" in ops:
            hg, wg = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
            B = 8
            with torch.no_grad():
                lp = fwd(h, w, y).squeeze(-1)
            old = (lp + 0.1 * torch.randn(NL, generator=g)).contiguous()
            ref = old.clone()
            adv = torch.randn(B, 1, generator=g).expand(B, NL // B).reshape(-1).contiguous()

            def lin_loss(hh, ww, yy, told, tref, tadv):
                return grpo_loss_of_logp(fwd(hh, ww, yy).squeeze(-1), told, tref, tadv)

            def loss_step(f):
                hg.grad = None
                wg.grad = None
                f(hg, wg, y, old, ref, adv).backward()
                return wg.grad

            self.time_modes("linear_grpo_loss_fwd_bwd", (NL, HL, V), "fp32", lin_loss, None, self.args.linear_reps, False, loss_step)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=7, help="kernel rows (bench_kernels' default: 7)")
    p.add_argument("--grpo-reps", type=int, default=30, help="GRPO core row (bench_grpo's default: 30)")
    p.add_argument("--linear-reps", type=int, default=3, help="fused linear rows (bench_kernels uses 3)")
    p.add_argument("--rows", type=int, default=512, help="N of the logits rows (bench_kernels' default: 512)")
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--quick", action="store_true", help="2 repetitions everywhere (smoke test)")
    args = p.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    ops = [o for o in args.ops.split(",") if o]
    for bad in [o for o in ops if o not in OPS] + [m for m in args.modes if m not in ("eager", "compile")] + \
            [d for d in args.dtypes if d not in DTYPES]:
        p.error("unknown op / mode / dtype: %s" % bad)
    if min(args.threads, args.reps, args.grpo_reps, args.linear_reps, args.rows, args.vocab) < 1:
        p.error("--threads, --reps, --grpo-reps, --linear-reps, --rows and --vocab must be positive")
    if args.quick:
        args.reps = args.grpo_reps = 2
        args.linear_reps = 1
    torch.set_num_threads(args.threads)
    emit(note="torch_baselines", torch_version=torch.__version__, threads=torch.get_num_threads(),
         cpu_capability=torch.backends.cpu.get_cpu_capability(), python=sys.version.split()[0],
         omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
    r = Runner(args)
    if "grpo_advantages+loss+grad" in ops:
        r.grpo_core()
    if any(o.startswith(("selective", "grpo_loss")) for o in ops):
        r.logits(ops)
    if any(o.startswith("linear") for o in ops):
        r.linear(ops)


if __name__ == "__main__":
    main()
