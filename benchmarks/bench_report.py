"""Merges one run of scripts/bench.sh: the msrl runners' JSON lines (bench_grpo, bench_kernels, each
with Debian's libtorch as its in-process baseline) and benchmarks/torch_baselines.py's (PyTorch eager
and torch.compile of the same formulas), into one JSON line per benchmark row and a markdown table;
optionally replaces the generated section of docs/benchmarks.md.

Output JSON line fields (null where a side did not produce the number; "notes" says why):
  op, label, shape, dtype, threads,
  msrl_ms, msrl_impl                  (bench_grpo: backend; bench_kernels: ISA or GEMM used),
  libtorch_ms, libtorch_version       (Debian's libtorch, same process as msrl),
  torch_eager_ms, torch_compile_ms, torch_compile_s (compilation, not in torch_compile_ms),
  torch_compile_matches_eager, torch_version          (PyPI's torch, this run),
  ratio_vs_libtorch, ratio_vs_torch_eager, ratio_vs_torch_compile    (baseline ms / msrl ms: > 1
                                                                      means msrl is faster),
  GBps, pct_measured_read_bw, measured_read_bw_GBps   (memory-bound kernel rows, from bench_kernels),
  GFLOPs, pct_measured_gemm_peak, gemm_alone_GFLOPs   (fused linear rows, from bench_kernels),
  floor_ms, floor_ratio, isa                          (GRPO core: bench_grpo's in-cache data-movement floor,
                                                       a pass that only reads the inputs and writes a gradient),
  quick, notes

Usage: bench_report.py --threads 2 [--grpo F] [--kernels F] [--torch F] [--meta F.json]
                       [--out bench.jsonl] [--markdown bench.md] [--docs docs/benchmarks.md]
Standard library only (runs with any python3).
"""
import argparse
import json
import math
import os
import re
import sys
import tempfile

BEGIN, END = "<!-- bench.sh:begin -->", "<!-- bench.sh:end -->"
LOGITS = [512, 151936]
LINEAR = [128, 512, 151936]
# The rows of the report: (op as the msrl runner names it, dtype, shape, source, label).
ROWS = [
    ("grpo_advantages+loss+grad", "fp32", [128, 1024], "bench_grpo",
     "GRPO core: advantages (G=8) + clipped loss + k3 KL + d loss/d logp"),
    ("selective_log_softmax_forward", "fp32", LOGITS, "bench_kernels", "selective log-softmax forward"),
    ("selective_log_softmax_forward", "bf16", LOGITS, "bench_kernels", "selective log-softmax forward"),
    ("selective_log_softmax_backward", "fp32", LOGITS, "bench_kernels",
     "selective log-softmax backward (baselines: fwd + autograd bwd)"),
    ("grpo_loss_from_logits_fwd_bwd", "fp32", LOGITS, "bench_kernels", "GRPO loss from logits, fwd + bwd"),
    ("grpo_loss_from_logits_fwd_bwd", "bf16", LOGITS, "bench_kernels", "GRPO loss from logits, fwd + bwd"),
    ("linear_selective_log_softmax_forward", "fp32", LINEAR, "bench_kernels", "fused linear log-prob forward"),
    ("linear_selective_log_softmax_fwd_bwd", "fp32", LINEAR, "bench_kernels",
     "fused linear log-prob fwd + bwd (d hidden, d W)"),
    ("linear_grpo_loss_fwd_bwd", "fp32", LINEAR, "bench_kernels",
     "fused linear GRPO loss, fwd + bwd (d hidden, d W)"),
]


def read_lines(path):
    """JSON objects of a runner's output; C's printf("%f", NAN) gives nan, which JSON lacks."""
    out = []
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for raw in f:
            raw = raw.strip()
            if not raw.startswith("{"):
                continue
            raw = re.sub(r":\s*-?(nan|inf)\b", ": null", raw, flags=re.IGNORECASE)
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
    return out


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 else None


def ratio(base, ours):
    return round(base / ours, 2) if base and ours else None


def merge(args, meta):
    grpo, kern, tor = read_lines(args.grpo), read_lines(args.kernels), read_lines(args.torch)
    T = args.threads
    status = meta.get("status", {})
    bw = next((r.get("GBps") for r in kern if r.get("op") == "measured_read_bandwidth" and r.get("threads") == T), None)
    torch_version = next((r.get("torch_version") for r in tor if r.get("torch_version")), meta.get("torch_version"))
    rows = []
    for op, dtype, shape, source, label in ROWS:
        notes = []
        if source == "bench_grpo":
            # host_threads at the run's thread count (and the single-threaded reference backend when
            # the run asks for 1 thread); each carries libtorch at the same thread count.
            mine = [r for r in grpo if r.get("op") == op and r.get("dtype") == dtype and r.get("threads") == T]
            if args.threads > 1:
                mine = [r for r in mine if r.get("backend") != "reference"]
        else:
            mine = [r for r in kern if r.get("op") == op and r.get("dtype") == dtype and r.get("threads") == T
                    and str(r.get("baseline", "")).startswith(("libtorch", "none"))]
        if not mine:
            mine = [None]
            why = status.get(source)
            if why and why != "ok":
                notes.append("msrl n/a: %s %s" % (source, why))
            elif source == "bench_kernels" and T not in (1, 2):
                notes.append("msrl n/a: bench_kernels times 1 and 2 threads only")
            elif source == "bench_kernels" and dtype == "bf16" and op == "grpo_loss_from_logits_fwd_bwd":
                notes.append("msrl n/a: bench_kernels times this op on fp32 logits only")
            elif source == "bench_kernels" and op.startswith("linear"):
                notes.append("msrl n/a: bench_kernels built without Eigen (MSRL_BENCH_EIGEN)")
            else:
                notes.append("msrl n/a: no %s line for this op/dtype/threads" % source)
        tmodes = {}
        for r in tor:
            if r.get("op") == op and r.get("dtype") == dtype and r.get("threads") == T and r.get("mode"):
                tmodes[r["mode"]] = r
        for mode in ("eager", "compile"):
            r = tmodes.get(mode)
            if r is None:
                notes.append("torch %s n/a: %s" % (mode, status.get("torch_baselines") if status.get("torch_baselines", "ok") != "ok"
                                                   else "not run"))
            elif r.get("error"):
                notes.append("torch %s failed: %s" % (mode, r["error"]))
            elif mode == "compile" and r.get("matches_eager") is False:
                notes.append("torch.compile result differs from eager (max abs diff %s)" % r.get("max_abs_diff_vs_eager"))
            elif r.get("shape") != shape:
                notes.append("torch %s shape %s differs from %s" % (mode, r.get("shape"), shape))
        for m in mine:
            m = m or {}
            ms = num(m.get("time_ms", m.get("time_ms_median")))
            lt = num(m.get("baseline_ms", m.get("baseline_ms_median")))
            if m and lt is None:
                notes.append("libtorch n/a: %s built without libtorch" % source)
            if m.get("shape") and m.get("shape") != shape:
                notes.append("msrl shape %s differs from %s" % (m.get("shape"), shape))
            e, c = tmodes.get("eager", {}), tmodes.get("compile", {})
            te, tc = num(e.get("time_ms")), num(c.get("time_ms"))
            row = {
                "op": op, "label": label, "shape": m.get("shape") or shape, "dtype": dtype, "threads": T,
                "msrl_ms": ms,
                "msrl_impl": m.get("backend") or m.get("gemm") or m.get("isa"),
                "libtorch_ms": lt, "libtorch_version": meta.get("libtorch_version"),
                "torch_eager_ms": te, "torch_compile_ms": tc, "torch_compile_s": c.get("compile_s"),
                "torch_compile_matches_eager": c.get("matches_eager"),
                "torch_version": torch_version,
                "ratio_vs_libtorch": ratio(lt, ms), "ratio_vs_torch_eager": ratio(te, ms),
                "ratio_vs_torch_compile": ratio(tc, ms),
                "GBps": num(m.get("GBps")), "pct_measured_read_bw": num(m.get("pct_measured_read_bw")),
                "measured_read_bw_GBps": bw if "GBps" in m else None,
                "GFLOPs": num(m.get("GFLOPs")), "pct_measured_gemm_peak": num(m.get("pct_measured_gemm_peak")),
                "gemm_alone_GFLOPs": num(m.get("gemm_alone_GFLOPs")),
                "floor_ms": num(m.get("floor_ms")), "floor_ratio": num(m.get("floor_ratio")),
                "isa": m.get("isa"),
                "quick": bool(meta.get("quick")), "notes": list(notes),
            }
            if ms is None and not any(n.startswith("msrl n/a") for n in notes):
                row["notes"].append("msrl n/a: no time in the %s line" % source)
            rows.append(row)
    return rows, bw


def fmt_ms(v):
    if v is None:
        return "n/a"
    return "%.3f" % v if v < 10 else ("%.1f" % v if v < 1000 else "{:,.0f}".format(v))


def fmt_x(v):
    return "n/a" if v is None else "%.2fx" % v


def markdown(rows, meta, bw):
    lt = meta.get("libtorch_version") or "?"
    tv = next((r["torch_version"] for r in rows if r.get("torch_version")), None) or "?"
    head = ("| op | dtype | shape | threads | msrl (ms) | libtorch %s (ms) | torch %s eager (ms) | torch.compile (ms) "
            "| vs libtorch | vs eager | vs compile | msrl throughput | %% of measured ceiling |" % (lt, tv))
    out = [head, "|" + "---|" * 13]
    notes = []
    for r in rows:
        if r.get("floor_ms") is not None and r["GBps"] is not None:
            # GRPO core: in cache, so the ceiling is the data-movement floor measured beside it
            thr = "%.1f GB/s" % r["GBps"]
            pct = "%.0f %% of the in-cache floor (%.3f ms, %s)" % (100.0 * r["floor_ms"] / r["msrl_ms"], r["floor_ms"],
                                                                 r.get("isa") or "?")
        elif r["GBps"] is not None:
            thr = "%.1f GB/s" % r["GBps"]
            pct = "%.0f %% of read BW" % r["pct_measured_read_bw"] if r["pct_measured_read_bw"] is not None else "n/a"
        elif r["GFLOPs"] is not None:
            thr = "%.1f GFLOP/s" % r["GFLOPs"]
            pct = ("%.0f %% of GEMM alone" % r["pct_measured_gemm_peak"]) if r["pct_measured_gemm_peak"] is not None else "n/a"
        else:
            thr, pct = "n/a", "n/a"
        label = r["label"] + (" [%s]" % r["msrl_impl"] if r.get("msrl_impl") else "")
        out.append("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, r["dtype"], " x ".join("{:,}".format(s) for s in r["shape"]), r["threads"], fmt_ms(r["msrl_ms"]),
            fmt_ms(r["libtorch_ms"]), fmt_ms(r["torch_eager_ms"]), fmt_ms(r["torch_compile_ms"]),
            fmt_x(r["ratio_vs_libtorch"]), fmt_x(r["ratio_vs_torch_eager"]), fmt_x(r["ratio_vs_torch_compile"]), thr, pct))
        for n in r["notes"]:
            notes.append("%s %s: %s" % (r["op"], r["dtype"], n))
    out.append("")
    out.append("Ratios are baseline time / msrl time (> 1: msrl is faster). Medians; the torch.compile column "
               "excludes compilation. Debian's libtorch runs inside the msrl runner's process; PyTorch eager and "
               "torch.compile run the same formulas in benchmarks/torch_baselines.py.")
    if bw is not None:
        out.append("")
        out.append("Measured read bandwidth (bench_kernels' probe, %d thread%s, same run): %.1f GB/s." %
                   (meta.get("threads", 0), "" if meta.get("threads") == 1 else "s", bw))
    if notes:
        out.append("")
        out.append("Notes:")
        out.extend("- " + n for n in notes)
    return "\n".join(out) + "\n"


def docs_section(table, meta):
    m = meta
    quick = ("\n**Quick run (`--quick`): a smoke test, not numbers to quote.**\n" if m.get("quick") else "")
    return "\n".join([
        BEGIN,
        "<!-- generated by scripts/bench.sh --docs: edits between these markers are overwritten -->",
        "- Command: `%s`, commit %s, %s UTC; %s repetitions (medians)." % (
            m.get("command", "scripts/bench.sh --docs"), m.get("commit", "?"), m.get("date_utc", "?"), m.get("reps", "?")),
        "- Machine: %s, %s cores (%s online), %s GiB memory, load average %s when timing started; msrl kernels' ISA %s, "
        "BLAS %s; PyTorch %s from PyPI (%s), Debian's libtorch %s." % (
            m.get("cpu_model", "?"), m.get("cores", "?"), m.get("online_cpus", "?"), m.get("mem_gib", "?"),
            m.get("loadavg_start", "?"), m.get("isa", "?"), m.get("blas", "?"), m.get("torch_version", "?"),
            m.get("python", "?"), m.get("libtorch_version", "?")),
        "- Build: `%s` (Release, the project's default flags: no `-march=native`)." % m.get("cmake_command", "cmake"),
        quick,
        table.rstrip("\n"),
        END,
    ]) + "\n"


def replace_docs(path, section):
    with open(path) as f:
        text = f.read()
    b, e = text.find(BEGIN), text.find(END)
    if b < 0 or e < 0 or e < b:
        sys.exit("bench_report: %s has no %s ... %s section; add the two marker lines where the table goes"
                 % (path, BEGIN, END))
    new = text[:b] + section.rstrip("\n") + text[e + len(END):]
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".benchmarks.", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)  # atomic: readers see the old file or the new one
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--grpo")
    p.add_argument("--kernels")
    p.add_argument("--torch")
    p.add_argument("--meta", help="JSON object: run and machine facts (written by scripts/bench.sh)")
    p.add_argument("--out", help="merged JSON lines")
    p.add_argument("--markdown", help="the table, also printed")
    p.add_argument("--docs", help="markdown file whose %s ... %s section is replaced" % (BEGIN, END))
    args = p.parse_args()
    meta = {}
    if args.meta:
        with open(args.meta) as f:
            meta = json.load(f)
    meta.setdefault("threads", args.threads)
    rows, bw = merge(args, meta)
    if args.out:
        with open(args.out, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    table = markdown(rows, meta, bw)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    sys.stdout.write(table)
    if args.docs:
        replace_docs(args.docs, docs_section(table, meta))
        print("bench_report: updated the generated section of %s" % args.docs)


if __name__ == "__main__":
    main()
