"""Dataset generation throughput: structures per hour with 1 and 2 workers, measured side by side.

    python benchmarks/generation_throughput.py [--n 2] [--xc pbe] [--basis def2-svp] [--molecules a b ...]

Generates the same small molecule set (names from the built-in set, ``phisnet molecules``) into fresh
temporary databases three ways, one after the other in one run: inline in this process (1 worker),
a Dask LocalCluster with 1 worker, and a Dask LocalCluster with 2 workers, every PySCF calculation
on one thread. Each figure is wall time from the call to the finished database, so it includes the
conformer search and the cluster start-up; the table gives structures per hour and the ratio to the
inline run. On a machine with C free cores, W workers can at best be min(W, C) times faster.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import ase.db

from phisnet.molecules import builtin_molecule_set
from phisnet.set_generation import generate_set

DEFAULT_MOLECULES = ["methanol", "acetonitrile", "glycine", "urea", "acetone", "C5H5N"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", nargs="+", default=DEFAULT_MOLECULES, help="names from the built-in set")
    parser.add_argument("--n", type=int, default=2, help="structures per molecule")
    parser.add_argument("--xc", default="pbe")
    parser.add_argument("--basis", default="def2-svp")
    args = parser.parse_args()

    by_name = {e.name: e for e in builtin_molecule_set()}
    missing = [m for m in args.molecules if m not in by_name]
    if missing:
        parser.error(f"not in the built-in set: {', '.join(missing)} (see: phisnet molecules)")
    entries = [by_name[m] for m in args.molecules]
    print(
        f"PySCF {args.xc.upper()}/{args.basis}, 1 thread per calculation, {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}; {len(entries)} molecules x {args.n} structures"
    )
    runs = [("inline, 1 worker", None, 1), ("Dask LocalCluster, 1 worker", "local", 1)]
    runs.append(("Dask LocalCluster, 2 workers", "local", 2))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, scheduler, workers in runs:
            path = Path(tmp) / f"{len(rows)}.db"
            t0 = time.perf_counter()
            generate_set(
                entries,
                args.n,
                path,
                scheduler=scheduler,
                workers=workers,
                threads=1,
                xc=args.xc,
                basis=args.basis,
                progress=False,
                log=lambda message: None,
            )
            seconds = time.perf_counter() - t0
            count = ase.db.connect(path).count()
            rows.append((label, count, seconds, count / seconds * 3600))
    header = f"{'how':<30}{'structures':>11}{'wall / s':>10}{'per hour':>10}{'vs inline':>11}"
    print(header)
    print("-" * len(header))
    for label, count, seconds, rate in rows:
        print(f"{label:<30}{count:>11}{seconds:>10.1f}{rate:>10.0f}{rate / rows[0][3]:>10.2f}x")


if __name__ == "__main__":
    main()
