"""GPU check: the CPU-vs-GPU agreement tests, then ResNet-18 timings on CIFAR-shaped tensors. One script,
sized to finish in under 8 minutes on one H100.

    python benchmarks/gpu_check.py [--out gpu-check.json]
    python benchmarks/gpu_check.py --smoke          # tiny sizes on the CPU: checks that the script runs

What it does, in order (each part prints as it finishes; nothing is asserted except by the tests):
1. ``pytest -m cuda tests/test_fixed_reference.py``: CPU and GPU agree on the committed checkpoint (features,
   every collapse metric, clean and PGD accuracy; tolerances in that file). TF32 is off (ncbench's fp32).
2. Training throughput of ncbench's ResNet-18 (CIFAR stem) on random 3x32x32 inputs, batch 256, SGD with
   momentum: fp32, fp32 + channels_last, bf16 autocast, bf16 + channels_last (samples/s, median of 3 timed
   windows of 20 steps after 10 warm-up steps, CUDA-synchronised).
3. AutoAttack "standard" (ncbench's composition of torchattacks components) per 1,000 points on an untrained
   ResNet-18 whose labels are its own predictions (every point starts correct): at eps 8/255, where most points
   fall to APGD-CE, and at eps 0.5/255 on 250 points (most stay robust, so all four components run), scaled
   to 1,000 points. Linf. The two bracket what a real model costs.
4. Collapse metrics (``ncbench.collapse.collapse_metrics``, float64 maths) on 50,000 x 512 float32 features,
   10 classes, on the GPU and on the CPU: median of 3, and the largest relative difference between the two.

Measures and prints; the only pass/fail is the tests' in part 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_tests(smoke: bool) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-rs", str(REPO / "tests/test_fixed_reference.py")]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    tail = proc.stdout.strip().splitlines()[-3:]
    print("1. CPU vs GPU tests:", " | ".join(tail), f"({time.perf_counter() - t:.0f} s)", flush=True)
    return {"returncode": proc.returncode, "summary": tail}


def train_throughput(device, *, batch: int, steps: int, warmup: int, repeats: int) -> list[dict]:
    from ncbench.models import create_model

    rows = []
    for precision in ("fp32", "bf16"):
        for fmt in ("contiguous", "channels_last"):
            torch.manual_seed(0)
            model = create_model("resnet18", input_shape=(3, 32, 32), num_classes=10).to(device)
            mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
            model = model.to(memory_format=mf).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=mf)
            y = torch.randint(0, 10, (batch,), device=device)

            def step():
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = torch.nn.functional.cross_entropy(model(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            for _ in range(warmup):
                step()
            sync(device)
            rates = []
            for _ in range(repeats):
                t = time.perf_counter()
                for _ in range(steps):
                    step()
                sync(device)
                rates.append(batch * steps / (time.perf_counter() - t))
            rows.append({"precision": precision, "memory_format": fmt, "samples_per_s": statistics.median(rates)})
            print(f"2. ResNet-18 training {precision:>4} {fmt:<13} {rows[-1]['samples_per_s']:>10.0f} samples/s",
                  flush=True)
    base = rows[0]["samples_per_s"]
    for r in rows:
        r["ratio_to_fp32"] = r["samples_per_s"] / base
    return rows


def autoattack_time(device, *, points_big: int, points_small: int) -> list[dict]:
    from ncbench.attacks import AttackConfig, robustness_curve
    from ncbench.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", input_shape=(3, 32, 32), num_classes=10).to(device).eval()
    rows = []
    for eps, n in ((8 / 255, points_big), (0.5 / 255, points_small)):
        x = torch.rand(n, 3, 32, 32, device=device)
        with torch.no_grad():
            y = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, n, 500)])
        cfg = AttackConfig(name="autoattack", norm="Linf", eps=(eps,), batch_size=500)
        sync(device)
        t = time.perf_counter()
        out = robustness_curve(model, x, y, cfg, progress=False)
        sync(device)
        seconds = time.perf_counter() - t
        row = {"eps": eps, "points": n, "seconds": seconds, "seconds_per_1000": seconds * 1000 / n,
               "robust_accuracy": out["curve"][0]["robust_accuracy"], "fooled_by": out["curve"][0].get("fooled_by")}
        rows.append(row)
        print(f"3. AutoAttack standard-Linf eps {eps * 255:g}/255: {seconds:.1f} s for {n} points = "
              f"{row['seconds_per_1000']:.1f} s per 1,000 (robust {row['robust_accuracy']:.3f})", flush=True)
    return rows


def collapse_time(device, *, n: int, d: int, repeats: int) -> dict:
    from ncbench.collapse import collapse_metrics

    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    mu = torch.randn(10, d, generator=g) * 3
    h = (mu[y] + torch.randn(n, d, generator=g)).float()
    w, b = torch.randn(10, d, generator=g), torch.randn(10, generator=g)
    out = {}
    values = {}
    for where in (["cpu", "cuda"] if device.type == "cuda" else ["cpu"]):
        args = [t.to(where) for t in (h, y, w, b)]
        times = []
        for _ in range(repeats):
            sync(torch.device(where))
            t = time.perf_counter()
            res = collapse_metrics((args[0], args[1]), weight=args[2], bias=args[3], weight_decay=5e-4)
            sync(torch.device(where))
            times.append(time.perf_counter() - t)
        out[f"{where}_s"] = statistics.median(times)
        values[where] = res["train"]
    if "cuda" in values:
        out["max_rel_diff"] = max(abs(values["cuda"][k] - v) / max(abs(v), 1e-12) for k, v in values["cpu"].items())
        out["speedup"] = out["cpu_s"] / out["cuda_s"]
    print(f"4. collapse metrics on {n} x {d}: " + ", ".join(f"{k} {v:.3g}" for k, v in out.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script runs")
    args = ap.parse_args()
    from ncbench.environment import configure_numerics, versions

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    numerics = configure_numerics(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor()})"
    print(f"device: {name}; torch {torch.__version__}; {versions()}; TF32 {numerics}", flush=True)
    t0 = time.perf_counter()
    result = {"device": name, "versions": versions(), "numerics": numerics}
    result["tests"] = run_tests(args.smoke)
    if args.smoke:
        result["train"] = train_throughput(device, batch=8, steps=2, warmup=1, repeats=1)
        result["autoattack"] = autoattack_time(device, points_big=4, points_small=4)
        result["collapse"] = collapse_time(device, n=2000, d=64, repeats=1)
    else:
        result["train"] = train_throughput(device, batch=256, steps=20, warmup=10, repeats=3)
        result["autoattack"] = autoattack_time(device, points_big=1000, points_small=250)
        result["collapse"] = collapse_time(device, n=50_000, d=512, repeats=3)
    result["total_s"] = time.perf_counter() - t0
    print(f"total {result['total_s']:.0f} s", flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
