"""Benchmark tabsynth's DP-GAN on UCI Adult: utility, fidelity, speed and memory per epsilon.

Usage (from the repository root):

    python benchmarks/adult.py                        # epsilons 0.3 1 3, full settings
    python benchmarks/adult.py --epsilons 1 --epochs 50
    python benchmarks/adult.py --quick                # tiny smoke test

Every run (the "real train" baseline and each epsilon) executes in a fresh subprocess of
this script (hidden ``--single`` mode, which writes one JSON row), so the peak RSS that
is reported belongs to that run alone. See benchmarks/README.md for the columns.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Benchmark the working tree's tabsynth, not whatever version happens to be installed.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET = "income"
DEFAULT_DATA_DIR = REPO.parent / "shared" / "datasets" / "adult"
DEFAULT_OUT = HERE / "results"
DEFAULT_EPSILONS = (0.3, 1.0, 3.0)
DEFAULT_FACTORY = "tabsynth:Synthesizer"
QUICK = {"epsilons": (1.0,), "epochs": 1, "train_rows": 5_000, "large_n": 20_000}

COLUMNS = [
    "setting", "epsilon", "delta", "steps", "HGB AUC", "HGB acc", "LR AUC", "1-way TVD",
    "2-way TVD", "cat-pair 2-way TVD", "out-of-domain", "fit s", "sample rows/s", "peak RSS MB",
]


# ----------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; the ``--single`` family is internal (one run per subprocess)."""
    p = argparse.ArgumentParser(
        description="Benchmark tabsynth's DP synthesizer on UCI Adult (TSTR, TVD, speed, memory).",
    )
    p.add_argument("--epsilons", type=float, nargs="+", default=None,
                   help="privacy budgets to fit at (default 0.3 1 3; --quick: 1)")
    p.add_argument("--delta", type=float, default=1e-5, help="DP delta (default 1e-5)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help="folder with train.parquet and test.parquet "
                        "(default ../shared/datasets/adult next to the repository)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="folder for adult.json and adult.md (default benchmarks/results)")
    p.add_argument("--seed", type=int, default=0, help="seed for fitting, sampling and models")
    p.add_argument("--epochs", type=int, default=None, help="override Synthesizer epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override Synthesizer batch_size")
    p.add_argument("--device", default="auto", help="Synthesizer device (default auto)")
    p.add_argument("--set", dest="overrides", metavar="SETTING=VALUE", action="append", default=[],
                   help="override any other Synthesizer setting, e.g. --set marginal_steps=3000 "
                        "(VALUE is a Python literal; repeatable)")
    p.add_argument("--large-n", type=int, default=None,
                   help="rows for the large sampling-speed run (default 200000; --quick: 20000)")
    p.add_argument("--domains", nargs="+", choices=("declared", "discover"), default=["declared", "discover"],
                   help="where the domain comes from: 'declared' = schema from Adult's public documentation "
                        "(benchmarks/adult_schema.py), 'discover' = DP domain discovery (costs budget)")
    p.add_argument("--domain", choices=("declared", "discover"), default="declared", help=argparse.SUPPRESS)
    p.add_argument("--no-baseline", action="store_true", help="skip the 'real train' baseline row")
    p.add_argument("--quick", action="store_true",
                   help="tiny smoke-test setting: 1 epoch on 5,000 training rows, epsilon 1, "
                        "results written to adult_quick.{json,md}")
    # Internal: one run in this process, result written as JSON.
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--epsilon", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-file", type=Path, default=None, help=argparse.SUPPRESS)
    # Internal/testing: "module:callable" building a synthesizer with the Synthesizer API.
    p.add_argument("--synthesizer-factory", default=DEFAULT_FACTORY, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epsilons is not None and any(e <= 0 for e in args.epsilons):
        p.error("--epsilons must all be positive")
    if not 0 < args.delta < 1:
        p.error("--delta must be in (0, 1)")
    if args.large_n is not None and args.large_n < 1:
        p.error("--large-n must be positive")
    return args


def epsilons_of(args: argparse.Namespace) -> list[float]:
    """Epsilons to benchmark, honouring --quick when --epsilons is not given."""
    if args.epsilons is not None:
        return list(args.epsilons)
    return list(QUICK["epsilons"] if args.quick else DEFAULT_EPSILONS)


def synthesizer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Synthesizer settings: library defaults unless a CLI flag (or --quick) overrides them."""
    kwargs: dict[str, Any] = {"seed": args.seed, "device": args.device}
    epochs = args.epochs if args.epochs is not None else (QUICK["epochs"] if args.quick else None)
    if epochs is not None:
        kwargs["epochs"] = epochs
    if args.batch_size is not None:
        kwargs["batch_size"] = args.batch_size
    for override in args.overrides:
        name, sep, value = override.partition("=")
        if not sep or not name.isidentifier():
            raise SystemExit(f"--set expects SETTING=VALUE, got {override!r}")
        try:
            kwargs[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[name] = value  # a bare word such as wgan-gp
    return kwargs


def large_n_of(args: argparse.Namespace) -> int:
    """Row count for the large sampling-throughput measurement."""
    if args.large_n is not None:
        return args.large_n
    return QUICK["large_n"] if args.quick else 200_000


# ------------------------------------------------------------------ helpers


def jsonable(value: Any) -> Any:
    """Recursively convert numpy/torch scalars, paths and NaN into strict-JSON values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def load_factory(spec: str) -> Any:
    """Resolve a "module:callable" string to the callable that builds a synthesizer."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--synthesizer-factory must look like 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(module_name), attr)


def machine_info(device: str) -> dict[str, Any]:
    """Platform, CPU count, torch version and accelerator, for the report header."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "requested_device": device,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["accelerator"] = f"cuda: {torch.cuda.get_device_name(0)}"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            info["accelerator"] = "mps"
        else:
            info["accelerator"] = "none (cpu)"
    except ImportError:
        info["torch"] = None
        info["accelerator"] = "unknown (torch not importable)"
    return info


def load_adult(data_dir: Path) -> tuple[Any, Any]:
    """Adult train and test tables from data_dir, with a clear error when missing."""
    import pandas as pd

    paths = [data_dir / "train.parquet", data_dir / "test.parquet"]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"Adult data not found: {missing} (see --data-dir)")
    train, test = (pd.read_parquet(p) for p in paths)
    for name, frame in (("train", train), ("test", test)):
        if TARGET not in frame.columns:
            raise ValueError(f"{name}.parquet has no {TARGET!r} column")
    return train, test


# ------------------------------------------------------------- single run


def run_single(args: argparse.Namespace) -> dict[str, Any]:
    """One benchmark row in this process: fit/sample (unless baseline) and all metrics."""
    from tabsynth.evaluate import fidelity_report, out_of_domain_fraction, peak_rss_mb, sampling_floor, tstr

    start = time.perf_counter()
    train, test = load_adult(args.data_dir)
    if args.quick:
        rows = min(len(train), QUICK["train_rows"])
        train = train.sample(rows, random_state=args.seed).reset_index(drop=True)
    row: dict[str, Any] = {"n_train": len(train), "n_test": len(test)}

    if args.epsilon is None:  # baseline: the real training data plays the synthetic table
        row.update(setting="real train", epsilon=None, delta=None)
        utility = tstr(train, test, TARGET, random_state=args.seed)
        fidelity = fidelity_report(train, test)  # real test vs real train: sampling noise floor
        ood = out_of_domain_fraction(train, test)
        # What n_train rows drawn from the real distribution itself score: the reference for the DP rows' TVDs.
        row["sampling_floor"] = sampling_floor(train, len(train), seed=args.seed)
    else:
        factory = load_factory(args.synthesizer_factory)
        kwargs = synthesizer_kwargs(args)
        row.update(setting=f"DP-GAN, {args.domain} domain", epsilon=args.epsilon, delta=args.delta,
                   synthesizer=args.synthesizer_factory, synthesizer_kwargs=kwargs)
        synth = factory(**kwargs)
        schema = None
        if args.domain == "declared":
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from adult_schema import declared_schema
            schema = declared_schema()
        t0 = time.perf_counter()
        synth.fit(train, epsilon=args.epsilon, delta=args.delta, schema=schema)
        row["fit_seconds"] = time.perf_counter() - t0
        row["peak_rss_mb_after_fit"] = peak_rss_mb()
        report = dict(synth.privacy_report())
        row["privacy"] = report
        row["steps"] = report.get("steps")
        row["device"] = str(getattr(synth, "device", args.device))

        t0 = time.perf_counter()
        synthetic = synth.sample(len(train), seed=args.seed)
        row["sample_seconds"] = time.perf_counter() - t0
        row["sample_rows_per_s"] = len(synthetic) / max(row["sample_seconds"], 1e-9)
        if len(synthetic) != len(train) or list(synthetic.columns) != list(train.columns):
            raise RuntimeError(
                f"sample({len(train)}) returned {len(synthetic)} rows with columns "
                f"{list(synthetic.columns)}; expected {list(train.columns)}"
            )
        large_n = large_n_of(args)
        t0 = time.perf_counter()
        large = synth.sample(large_n, seed=args.seed + 1)
        row["sample_large_seconds"] = time.perf_counter() - t0
        row["sample_large_n"] = len(large)
        row["sample_large_rows_per_s"] = len(large) / max(row["sample_large_seconds"], 1e-9)
        del large
        row["peak_rss_mb_after_sampling"] = peak_rss_mb()

        utility = tstr(synthetic, test, TARGET, random_state=args.seed)
        fidelity = fidelity_report(train, synthetic)
        ood = out_of_domain_fraction(train, synthetic)

    row.update(tstr=utility, fidelity=fidelity, out_of_domain=ood)
    row["peak_rss_mb"] = peak_rss_mb()
    row["wall_seconds"] = time.perf_counter() - start
    return row


def single_main(args: argparse.Namespace) -> int:
    """Entry point of the child process: run one row and write it (or the error) as JSON."""
    if args.result_file is None:
        raise SystemExit("--single needs --result-file")
    try:
        row = run_single(args)
        row["status"] = "ok"
        code = 0
    except Exception as exc:  # recorded in the report instead of aborting the whole sweep
        traceback.print_exc()
        row = {
            "setting": "real train" if args.epsilon is None else "DP-GAN",
            "epsilon": args.epsilon,
            "delta": None if args.epsilon is None else args.delta,
            "status": "failed",
            "error": f"{type(exc).__name__}: {exc}",
        }
        code = 1
    args.result_file.write_text(json.dumps(jsonable(row), indent=2))
    return code


# ------------------------------------------------------------------ parent


def child_command(args: argparse.Namespace, epsilon: float | None, result_file: Path,
                  domain: str = "declared") -> list[str]:
    """Re-invoke this script in --single mode with the same settings for one row."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--single", "--domain", domain,
           "--result-file", str(result_file), "--data-dir", str(args.data_dir),
           "--seed", str(args.seed), "--delta", repr(args.delta), "--device", args.device,
           "--synthesizer-factory", args.synthesizer_factory]
    if epsilon is not None:
        cmd += ["--epsilon", repr(epsilon)]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size),
                        ("--large-n", args.large_n)):
        if value is not None:
            cmd += [flag, str(value)]
    for override in args.overrides:
        cmd += ["--set", override]
    if args.quick:
        cmd.append("--quick")
    return cmd


def run_child(args: argparse.Namespace, epsilon: float | None, tmp: Path,
              domain: str = "declared") -> dict[str, Any]:
    """Run one row in a fresh interpreter so its peak RSS is its own."""
    label = "real train baseline" if epsilon is None else f"epsilon={epsilon:g}, {domain} domain"
    print(f"== {label}", flush=True)
    result_file = tmp / f"row-{'baseline' if epsilon is None else f'{epsilon}-{domain}'}.json"
    proc = subprocess.run(child_command(args, epsilon, result_file, domain), check=False)
    if result_file.exists():
        row = json.loads(result_file.read_text())
    else:  # killed (e.g. out of memory) before it could write anything
        row = {"setting": "real train" if epsilon is None else "DP-GAN", "epsilon": epsilon,
               "delta": None if epsilon is None else args.delta, "status": "failed",
               "error": f"subprocess exited with code {proc.returncode} and wrote no result"}
    row["returncode"] = proc.returncode
    return row


def fmt(value: Any, spec: str = ".3f") -> str:
    """Markdown cell for a number, '—' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (int, float)):
        return format(value, spec)
    return str(value)


def table_row(row: dict[str, Any]) -> list[str]:
    """The Markdown cells of one result row (see COLUMNS)."""
    if row.get("status") != "ok":
        cells = [row.get("setting", "?"), fmt(row.get("epsilon"), "g"), fmt(row.get("delta"), "g")]
        error = f"FAILED: {row.get('error', '')}"[:160].replace("|", "\\|").replace("\n", " ")
        return cells + [error] + [""] * (len(COLUMNS) - 4)
    utility, fidelity = row["tstr"], row["fidelity"]
    if row.get("sample_rows_per_s") is not None:
        rate = f"{row['sample_rows_per_s']:,.0f} / {row['sample_large_rows_per_s']:,.0f}"
    else:
        rate = "—"
    return [
        row["setting"],
        fmt(row.get("epsilon"), "g"),
        fmt(row.get("delta"), "g"),
        fmt(row.get("steps"), "d") if isinstance(row.get("steps"), int) else fmt(row.get("steps")),
        fmt(utility["hgb"]["roc_auc"]),
        fmt(utility["hgb"]["accuracy"]),
        fmt(utility["logreg"]["roc_auc"]),
        fmt(fidelity["tvd_1way_mean"]),
        fmt(fidelity["tvd_2way_mean"]),
        fmt(fidelity["tvd_2way_cat_mean"]),
        fmt(row["out_of_domain"]["overall"], ".4f"),
        fmt(row.get("fit_seconds"), ".1f"),
        rate,
        fmt(row.get("peak_rss_mb"), ".0f"),
    ]


def render_markdown(result: dict[str, Any]) -> str:
    """The Markdown report: header with command and machine, then one table row per run."""
    machine, settings = result["machine"], result["settings"]
    lines = [
        "# tabsynth benchmark: UCI Adult",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}",
        f"- machine: {machine['platform']}, {machine['cpu_count']} CPUs, "
        f"torch {machine['torch']}, accelerator {machine['accelerator']}, "
        f"device {', '.join(sorted(set(result['devices']))) or machine['requested_device']}",
        f"- data: {settings['n_train']:,} training rows fitted"
        f"{' (quick subsample)' if settings['quick'] else ''}, "
        f"{settings['n_test']:,} test rows; target `{TARGET}`; TVD with {settings['bins']} bins",
        f"- synthesizer settings: `{json.dumps(settings['synthesizer_kwargs'])}`",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(table_row(r)) + " |" for r in result["rows"]]
    lines += [
        "",
        f"TVD and out-of-domain compare against the real training data; the `real train` row "
        f"compares the real test split (half as many rows) with it and its TSTR scores are "
        f"train-on-real (TRTR). `sample rows/s` is `sample(n_train)` / "
        f"`sample({settings['large_n']:,})`. See benchmarks/README.md.",
        "",
    ]
    floor = next((row["sampling_floor"] for row in result["rows"] if row.get("sampling_floor")), None)
    if floor is not None:
        lines += [
            f"{floor['n']:,} rows drawn with replacement from the training data (an i.i.d. sample of its "
            f"distribution; `tabsynth.evaluate.sampling_floor`, {floor['draws']} draws) score 1-way / "
            f"2-way / cat-pair TVD {floor['tvd_1way_mean']:.4f} / {floor['tvd_2way_mean']:.4f} / "
            f"{floor['tvd_2way_cat_mean']:.4f} against it: the reference for the rows above (sampling "
            f"rakes towards the DP one-way marginals, so its 1-way TVD can fall below it).",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the baseline and every epsilon in subprocesses, then write JSON and Markdown."""
    args = parse_args(argv)
    if args.single:
        return single_main(args)

    args.data_dir = args.data_dir.resolve()
    try:  # fail fast, in the parent, when the data is missing
        train, test = load_adult(args.data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    n_train = min(len(train), QUICK["train_rows"]) if args.quick else len(train)
    invoked = sys.argv if argv is None else [sys.argv[0], *argv]
    command = shlex.join([Path(sys.executable).name, *invoked])
    rows = []
    with tempfile.TemporaryDirectory(prefix="tabsynth-bench-") as tmp:
        if not args.no_baseline:
            rows.append(run_child(args, None, Path(tmp)))
        for domain in args.domains:
            for eps in epsilons_of(args):
                rows.append(run_child(args, eps, Path(tmp), domain))

    ok = [r for r in rows if r.get("status") == "ok"]
    result = {
        "benchmark": "adult",
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(args.device),
        "devices": [r["device"] for r in ok if r.get("device")],
        "settings": {
            "epsilons": epsilons_of(args),
            "domains": args.domains,
            "delta": args.delta,
            "seed": args.seed,
            "quick": args.quick,
            "synthesizer": args.synthesizer_factory,
            "synthesizer_kwargs": synthesizer_kwargs(args),
            "large_n": large_n_of(args),
            "n_train": n_train,
            "n_test": len(test),
            "bins": ok[0]["fidelity"]["bins"] if ok else 20,
            "target": TARGET,
        },
        "rows": rows,
    }
    result = jsonable(result)
    markdown = render_markdown(result)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "adult_quick" if args.quick else "adult"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"wrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')}")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
