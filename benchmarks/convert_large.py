"""Benchmark `tabsynth convert` on a Parquet table far larger than the training batch: peak memory and
rows per second for fitting (scan, encode, train) and for sampling + writing.

Usage (from the repository root):

    python benchmarks/convert_large.py                    # 1M and 10M rows, the default DP-SGD steps
    python benchmarks/convert_large.py --rows 10000000 --steps 300

The input is UCI Adult's training split replicated (with a fresh row order) up to ``--rows`` rows and
written to a scratch directory as a Parquet dataset of several files. Each size runs in its own
process the steps `tabsynth convert` runs (a streaming fit, then sample_batches into write_parquet),
timing each phase and reporting its own peak RSS, with the declared Adult schema so that no budget
goes to domain discovery. Results: ``results/convert_large.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

DATA = REPO.parent / "shared" / "datasets" / "adult" / "train.parquet"
FILE_ROWS = 2_000_000  # rows per Parquet file of the generated dataset


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_table(rows: int, directory: Path) -> None:
    """Adult train replicated to ``rows`` rows, shuffled per file, as a directory of Parquet files."""
    import numpy as np
    import pandas as pd

    adult = pd.read_parquet(DATA)
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, start in enumerate(range(0, rows, FILE_ROWS)):
        size = min(FILE_ROWS, rows - start)
        frame = adult.iloc[rng.integers(0, len(adult), size)].reset_index(drop=True)
        frame.to_parquet(directory / f"part-{part:03d}.parquet", index=False, row_group_size=131_072)


def single(args: argparse.Namespace) -> None:
    """One convert in this process, timed by phase (the CLI's own code path, in-process)."""
    from adult_schema import declared_schema

    from tabsynth import Synthesizer
    from tabsynth.io import write_parquet

    synthesizer = Synthesizer(steps=args.steps, seed=0)
    started = time.perf_counter()
    synthesizer.fit(args.single, epsilon=args.epsilon, schema=declared_schema())
    fit_s = time.perf_counter() - started
    fit_rss = peak_rss_mb()
    out = Path(args.output)
    started = time.perf_counter()
    written = write_parquet(synthesizer.sample_batches(args.rows, seed=1), out, synthesizer.arrow_schema_)
    sample_s = time.perf_counter() - started
    report = synthesizer.privacy_report()
    print(json.dumps({"rows": args.rows, "steps": report["steps"], "epsilon": report["epsilon"],
                      "delta": report["delta"], "fit_s": fit_s, "fit_rows_per_s": args.rows / fit_s,
                      "fit_peak_rss_mb": fit_rss, "sample_write_s": sample_s,
                      "sample_write_rows_per_s": written / sample_s, "peak_rss_mb": peak_rss_mb(),
                      "output_mb": out.stat().st_size / 2**20}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=None,
                        help="DP-SGD steps (default: tabsynth's, 3 epochs of 1,024 rows up to max_steps)")
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--single", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.rows = args.rows[0]
        single(args)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="tabsynth-bench-") as scratch:
        for rows in args.rows:
            table = Path(scratch) / f"adult_{rows}"
            make_table(rows, table)
            command = [sys.executable, __file__, "--single", str(table), "--rows", str(rows),
                       *(["--steps", str(args.steps)] if args.steps else []),
                       "--epsilon", str(args.epsilon), "--output", str(Path(scratch) / "out.parquet")]
            line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            results.append(json.loads(line))
            print(results[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"command": " ".join(["python", "benchmarks/convert_large.py", *sys.argv[1:]]),
            "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
            "dataset": "UCI Adult train replicated (declared schema)"}
    (args.out / "convert_large.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    header = ("| rows | DP-SGD steps | epsilon | fit s | fit rows/s | peak RSS after fit MB | sample+write s "
              "| sample+write rows/s | peak RSS MB | output MB |")
    lines = [f"`{meta['command']}` on {meta['dataset']}", "", header, "|" + "---|" * 10]
    for r in results:
        lines.append(f"| {r['rows']:,} | {r['steps']} | {r['epsilon']:.3f} | {r['fit_s']:.0f} | "
                     f"{r['fit_rows_per_s']:,.0f} | {r['fit_peak_rss_mb']:.0f} | {r['sample_write_s']:.0f} | "
                     f"{r['sample_write_rows_per_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['output_mb']:.0f} |")
    (args.out / "convert_large.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
