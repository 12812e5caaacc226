"""Thread settings on a shared machine: torch's default threads against 1 thread and passive OpenMP waiting,
on an idle machine and beside other work.

    python benchmarks/bench_threads.py [--repeats 3] [--epochs 20] [--load 2]

Runs one short ``ncbench evaluate`` (MNIST-1D, the default CNN, --epochs E, PGD on 200 points) as its own
process under each setting:

- ``spin``: OMP_WAIT_POLICY=ACTIVE (waiting OpenMP threads spin on their core);
- ``gomp default``: OMP_WAIT_POLICY unset, what torch gives when nothing sets it (libgomp spins for a while,
  about 300,000 iterations, then sleeps): ncbench 0.2's behaviour; ``NCBENCH_KEEP_OMP=1`` keeps ncbench 0.3
  from setting the policy;
- ``passive``: OMP_WAIT_POLICY=PASSIVE (waiting threads sleep at once), ncbench's default since 0.3;
- ``1 thread``: --threads 1.

each first on an idle machine, then with ``--load`` busy processes (one spinning Python loop each) running
beside it, as on a workstation or a cluster node shared with other jobs. Prints the median wall time per cell
and the ratio to the best setting of the same condition, and checks that every setting printed the same test
accuracy (the numbers must not depend on the wait policy; they do depend on the thread count). Measures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "spin (OMP_WAIT_POLICY=ACTIVE)": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "gomp default (unset)": ({"OMP_WAIT_POLICY": ""}, []),
    "passive (ncbench default)": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "1 thread": ({"OMP_WAIT_POLICY": "PASSIVE"}, ["--threads", "1"]),
}


def run_once(env_extra: dict, extra: list, epochs: int, out: str) -> tuple[float, str]:
    env = {**os.environ, **env_extra}
    if env_extra.get("OMP_WAIT_POLICY") == "":
        env.pop("OMP_WAIT_POLICY")
        env["NCBENCH_KEEP_OMP"] = "1"  # ncbench leaves libgomp's own default in place
    cmd = [sys.executable, "-m", "ncbench", "evaluate", "--epochs", str(epochs), "--n-points", "200", "--eps",
           "0,0.01", "--output", out, "--rerun", "--quiet", *extra]
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    acc = re.search(r"test (\d\.\d{4})", done.stdout)
    return wall, acc.group(1) if acc else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--load", type=int, default=2, help="busy processes beside the run in the loaded condition")
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory() as out:
        for condition in ("idle", "loaded"):
            hogs = []
            if condition == "loaded":
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
                time.sleep(1.0)
            try:
                for _ in range(args.repeats):
                    for name, (env, extra) in SETTINGS.items():
                        wall, acc = run_once(env, extra, args.epochs, os.path.join(out, name.split()[0]))
                        results.setdefault((condition, name), []).append((wall, acc))
            finally:
                for h in hogs:
                    h.kill()
    print(f"ncbench evaluate, MNIST-1D default CNN, {args.epochs} epochs, PGD on 200 points; median of "
          f"{args.repeats} runs; loaded = {args.load} busy processes beside it; {os.cpu_count()} cores")
    for condition in ("idle", "loaded"):
        medians = {n: statistics.median(w for w, _ in results[(condition, n)]) for n in SETTINGS}
        best = min(medians.values())
        print(f"\n{condition}:")
        for name in SETTINGS:
            accs = sorted({a for _, a in results[(condition, name)]})
            print(f"  {name:<30} {medians[name]:8.1f} s   x{medians[name] / best:5.2f} of the best   "
                  f"test accuracy {', '.join(accs)}")


if __name__ == "__main__":
    main()
