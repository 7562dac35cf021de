"""Ablation of the dp-GAN papers' techniques (issue 4) on the ACS pair and on Adult.

Usage (from the repository root):

    python benchmarks/ablation.py --dataset acs             # epsilons 0.3 1 3, 2 repeats
    python benchmarks/ablation.py --dataset adult --repeats 1 --epsilons 1
    python benchmarks/ablation.py --dataset acs --quick     # smoke test

Each cell fits the synthesizer under one cumulative configuration (none / weight-bias separation /
+ adaptive clipping / + weight clustering / + warm start / + DP marginals, issue 3's defaults),
samples as many rows as the private
table has and measures train-on-synthetic-test-on-real and marginal fidelity. The domain comes from
the public table (ACS: the 2018 file; Adult: the schema declared from Adult's documentation, with a
2% public split) in every row, so the rows differ only in the technique. The privacy noise is drawn
from OS entropy, so repeats differ: the table gives the mean and the spread of the repeats.
Results go to ``benchmarks/results/ablation_<dataset>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:  # benchmark the working tree's tabsynth
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from tabsynth import Schema, Synthesizer  # noqa: E402
from tabsynth.evaluate import fidelity_report, peak_rss_mb, tstr  # noqa: E402

DATA = REPO.parent / "shared" / "datasets"
ACS_WEIGHTS = ["PWGTP", "WGTP"]
# ACS columns whose values are codes (data dictionary): categories, not numbers.
ACS_CODES = ["SEX", "MSP", "HISP", "RAC1P", "HOUSING_TYPE", "OWN_RENT", "INDP", "INDP_CAT", "EDU",
             "PINCP_DECILE", "DVET", "DREM", "DPHY", "DEYE", "DEAR"]
# The dp-GAN rows use the one-way marginals for calibrated sampling only, as when issue 4 measured them.
ONE_WAY_ONLY = dict(marginal_fraction=0.2, marginal_pairs=0, marginal_steps=0, marginal_weight=0.0)
CONFIGS: dict[str, dict[str, Any]] = {
    "none": dict(clip_grouping="flat", adaptive_clipping="off", warm_start_epochs=0, **ONE_WAY_ONLY),
    "weight/bias separation": dict(clip_grouping="weight_bias", adaptive_clipping="off", warm_start_epochs=0,
                                   **ONE_WAY_ONLY),
    "+ adaptive clipping": dict(clip_grouping="weight_bias", adaptive_clipping="public", warm_start_epochs=0,
                                **ONE_WAY_ONLY),
    "+ weight clustering": dict(clip_grouping="clustered", adaptive_clipping="public", warm_start_epochs=0,
                                **ONE_WAY_ONLY),
    "+ warm start": dict(clip_grouping="clustered", adaptive_clipping="public", warm_start_epochs=5, **ONE_WAY_ONLY),
    # The defaults of issue 3: the generator also learns from DP one- and two-way marginals.
    "+ DP marginals": dict(clip_grouping="clustered", adaptive_clipping="public", warm_start_epochs=5,
                           marginal_fraction=0.5),
}


# Without a public table (--no-public): bounds adapt privately, and there is nothing to warm-start from.
PRIVATE_CONFIGS: dict[str, dict[str, Any]] = {
    "none": CONFIGS["none"],
    "weight/bias separation": CONFIGS["weight/bias separation"],
    "+ adaptive clipping (private)": dict(clip_grouping="weight_bias", adaptive_clipping="private", warm_start_epochs=0,
                                          **ONE_WAY_ONLY),
    "+ weight clustering (private)": dict(clip_grouping="clustered", adaptive_clipping="private", warm_start_epochs=0,
                                          **ONE_WAY_ONLY),
    "+ DP marginals": dict(clip_grouping="clustered", adaptive_clipping="private", warm_start_epochs=0,
                           marginal_fraction=0.5),
}


def acs_schema(public: pd.DataFrame) -> Schema:
    """The ACS schema from the public year, code columns declared categorical (as the data dictionary says)."""
    return Schema.infer(public, overrides={c: "categorical" for c in ACS_CODES})


def load(dataset: str, seed: int) -> dict[str, Any]:
    """Public, private and test tables, target and schema for ``dataset``."""
    if dataset == "acs":
        public = pd.read_parquet(DATA / "acs" / "national2018.parquet").drop(columns=ACS_WEIGHTS)
        year = pd.read_parquet(DATA / "acs" / "national2019.parquet").drop(columns=ACS_WEIGHTS)
        test_mask = np.random.default_rng(seed).random(len(year)) < 0.2
        private, test = year[~test_mask].reset_index(drop=True), year[test_mask].reset_index(drop=True)
        return dict(public=public, private=private, test=test, target="OWN_RENT", schema=acs_schema(public))
    if dataset == "adult":
        from adult_schema import declared_schema
        train = pd.read_parquet(DATA / "adult" / "train.parquet")
        public_mask = np.random.default_rng(seed).random(len(train)) < 0.02
        return dict(public=train[public_mask].reset_index(drop=True),
                    private=train[~public_mask].reset_index(drop=True),
                    test=pd.read_parquet(DATA / "adult" / "test.parquet"), target="income",
                    schema=declared_schema())
    raise ValueError(f"unknown dataset {dataset!r}")


def run_cell(data: dict[str, Any], config: dict[str, Any], epsilon: float, seed: int,
             quick: bool) -> dict[str, Any]:
    """One fit under ``config``: utility, fidelity, steps, noise, time."""
    settings = dict(config, seed=seed)
    if quick:
        settings.update(epochs=0.2, generator_hidden=(32,), discriminator_hidden=(32,))
    synth = Synthesizer(**settings)
    t0 = time.perf_counter()
    synth.fit(data["private"], epsilon=epsilon, delta=1e-5, schema=data["schema"], public=data.get("public"))
    fit_seconds = time.perf_counter() - t0
    synthetic = synth.sample(len(data["private"]), seed=seed)
    test = data["test"].dropna(subset=[data["target"]])
    utility = tstr(synthetic.dropna(subset=[data["target"]]), test, data["target"], random_state=seed)
    fidelity = fidelity_report(data["private"], synthetic)
    report = synth.privacy_report()
    return {"epsilon_spent": report["epsilon"], "delta_spent": report["delta"], "steps": report["steps"],
            "noise_multiplier": report["noise_multiplier"], "clipping": report["clipping"],
            "warm_start": report["warm_start"], "fit_seconds": fit_seconds,
            "hgb_auc": utility["hgb"]["roc_auc"], "hgb_accuracy": utility["hgb"]["accuracy"],
            "logreg_auc": utility["logreg"]["roc_auc"], "tvd_1way": fidelity["tvd_1way_mean"],
            "tvd_2way": fidelity["tvd_2way_mean"], "tvd_2way_cat": fidelity["tvd_2way_cat_mean"]}


def reference(data: dict[str, Any], seed: int) -> dict[str, Any]:
    """The real private table in the synthetic table's place: train-on-real utility, and the test split's
    distance from the private table (the sampling-noise floor of the TVDs)."""
    test = data["test"].dropna(subset=[data["target"]])
    utility = tstr(data["private"].dropna(subset=[data["target"]]), test, data["target"], random_state=seed)
    fidelity = fidelity_report(data["private"], data["test"])
    return {"hgb_auc": utility["hgb"]["roc_auc"], "hgb_accuracy": utility["hgb"]["accuracy"],
            "logreg_auc": utility["logreg"]["roc_auc"], "tvd_1way": fidelity["tvd_1way_mean"],
            "tvd_2way": fidelity["tvd_2way_mean"], "tvd_2way_cat": fidelity["tvd_2way_cat_mean"]}


METRICS = [("HGB AUC", "hgb_auc"), ("HGB acc", "hgb_accuracy"), ("LR AUC", "logreg_auc"),
           ("1-way TVD", "tvd_1way"), ("2-way TVD", "tvd_2way"), ("cat-pair 2-way TVD", "tvd_2way_cat")]


def cell(values: list[float]) -> str:
    """Mean over repeats, with the range when there is more than one."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def render(result: dict[str, Any]) -> str:
    lines = [f"# tabsynth ablation: {result['dataset']}", "",
             *[f"- command: `{c}`" for c in result["commands"]], f"- date: {result['date']}",
             f"- machine: {result['machine']}", f"- data: {result['data']}",
             "- cells: the mean over the repeats, their range in brackets; `runs` is the number of repeats",
             "", "| configuration | ε | runs | steps | noise multiplier | " + " | ".join(m for m, _ in METRICS)
             + " | fit s |", "|---" * (len(METRICS) + 6) + "|"]
    if result.get("reference"):
        ref = result["reference"]
        lines.append("| real private table (train on real; TVD: real test split) | — | — | — | — | "
                     + " | ".join(f"{ref[key]:.3f}" for _, key in METRICS) + " | — |")
    for row in result["rows"]:
        runs = row["runs"]
        if not runs:
            continue
        lines.append("| " + " | ".join([
            row["configuration"], f"{row['epsilon']:g}", str(len(runs)), str(runs[0]["steps"]),
            f"{np.mean([r['noise_multiplier'] for r in runs]):.3f}",
            *[cell([r[key] for r in runs]) for _, key in METRICS],
            f"{np.mean([r['fit_seconds'] for r in runs]):.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=("acs", "adult"), required=True)
    p.add_argument("--epsilons", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    p.add_argument("--repeats", type=int, default=2, help="fits per cell (0 with --add-to: only the reference row)")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS) + list(PRIVATE_CONFIGS), default=None,
                   help="configurations to run (default: all of the chosen mode)")
    p.add_argument("--no-public", action="store_true",
                   help="no public table: private adaptive clipping, no warm start (results: *_no_public)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (results: *_quick)")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--add-to", action="store_true",
                   help="add the new runs to the cells of the existing result file instead of replacing it")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = PRIVATE_CONFIGS if args.no_public else CONFIGS
    args.configs = args.configs or list(configs)
    unknown = sorted(set(args.configs) - set(configs))
    if unknown:
        p.error(f"configurations {unknown} do not belong to this mode")
    data = load(args.dataset, args.seed)
    if args.no_public:
        data["public"] = None
    stem = f"ablation_{args.dataset}" + ("_no_public" if args.no_public else "") + ("_quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{stem}.json"
    # --add-to: more repeats for the cells of an earlier result file (its runs are kept).
    earlier = json.loads(json_path.read_text()) if args.add_to and json_path.exists() else {}
    previous = earlier.get("rows", [])
    baseline = earlier.get("reference") or reference(data, args.seed)
    rows = {(row["configuration"], row["epsilon"]): row for row in previous}
    commands = [*earlier.get("commands", []),
                "python benchmarks/ablation.py " + " ".join(argv if argv is not None else sys.argv[1:])]
    for epsilon in args.epsilons:
        for name in args.configs:
            row = rows.setdefault((name, epsilon), {"configuration": name, "epsilon": epsilon,
                                                    "settings": configs[name], "runs": []})
            start = len(row["runs"])
            for r in range(start, start + args.repeats):
                row["runs"].append(run_cell(data, configs[name], epsilon, args.seed + r, args.quick))
                write(args, data, rows, commands, json_path, configs, baseline, earlier.get("peak_rss_mb", 0.0))  # after every fit: a stopped run keeps its results
            runs = row["runs"]
            print(f"eps={epsilon:g} {name}: " + ", ".join(f"{m}={cell([r[k] for r in runs])}" for m, k in METRICS),
                  flush=True)
    print(write(args, data, rows, commands, json_path, configs, baseline, earlier.get("peak_rss_mb", 0.0)))
    return 0


def write(args: argparse.Namespace, data: dict[str, Any], rows: dict[tuple[str, float], dict[str, Any]],
          commands: list[str], json_path: Path, configs: dict[str, dict[str, Any]],
          baseline: dict[str, Any], earlier_peak: float) -> str:
    """Write the JSON and Markdown results (rows in configuration order within each epsilon); returns the Markdown."""
    order = list(configs)
    ordered = sorted(rows.values(), key=lambda row: (row["epsilon"], order.index(row["configuration"])))
    result = {"dataset": args.dataset, "commands": commands,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "machine": f"{platform.platform()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
              "data": {"public_rows": 0 if data["public"] is None else len(data["public"]),
                       "private_rows": len(data["private"]),
                       "test_rows": len(data["test"]), "target": data["target"]},
              # the largest peak of the processes that wrote this file (an --add-to run keeps the earlier peak)
              "peak_rss_mb": max(peak_rss_mb(), earlier_peak), "reference": baseline, "rows": ordered}
    json_path.write_text(json.dumps(result, indent=2, default=float))
    markdown = render(result)
    json_path.with_suffix(".md").write_text(markdown)
    return markdown


if __name__ == "__main__":
    raise SystemExit(main())
