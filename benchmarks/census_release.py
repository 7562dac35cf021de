"""Census-style release, end to end through the command line (docs/census-release.md).

Usage (from the repository root):

    python benchmarks/census_release.py                  # ACS 2018 -> 2019 and the shipped CPS pair, epsilon 1
    python benchmarks/census_release.py --pairs cps --epsilon 3

For each pair it runs the commands a statistics office would run (``tabsynth schema infer`` on the
public prior year, ``tabsynth convert`` on the private current year, ``tabsynth report``), then
checks the release the way the office's quality assurance would, INTERNALLY (these checks read
the private table, so their numbers are not for publication): every code is a valid code of the
data dictionary, every edit rule holds, nulls sit where the real year has them (per-column null
share), the Parquet types are the input's, and the 1-way/2-way marginal distances.
Results go to ``benchmarks/results/census_release.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from ablation import ACS_CODES, ACS_WEIGHTS  # noqa: E402

from tabsynth import Rule, Schema  # noqa: E402
from tabsynth.evaluate import fidelity_report, peak_rss_mb  # noqa: E402

ACS = REPO.parent / "shared" / "datasets" / "acs"
DEMO = REPO / "datasets"


def tabsynth(*args: str, log: list[dict[str, Any]]) -> str:
    """Run one ``tabsynth`` command as a user would (a fresh process); record it and its time."""
    command = [sys.executable, "-m", "tabsynth", *args]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    log.append({"command": "tabsynth " + shlex.join(args), "seconds": time.perf_counter() - started,
                "exit_code": done.returncode})
    if done.returncode != 0:
        raise RuntimeError(f"tabsynth {shlex.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def valid_codes(dictionary: dict[str, Any], column: str) -> set[str] | None:
    """The codes the data dictionary lists for ``column``, as text (None where it lists ranges or nothing)."""
    values = dictionary.get(column, {}).get("values")
    if not isinstance(values, dict) or {"min", "max"} & set(values):
        return None
    return {code for code in values if code != "N"}


def release(pair: str, epsilon: float, work: Path, seed: int) -> dict[str, Any]:
    """Run the documented commands for ``pair`` in ``work`` and check what they released."""
    log: list[dict[str, Any]] = []
    if pair == "acs":
        public, private = work / "acs2018_public.parquet", work / "acs2019_private.parquet"
        for source, target in ((ACS / "national2018.parquet", public), (ACS / "national2019.parquet", private)):
            table = pq.read_table(source)
            pq.write_table(table.drop_columns(ACS_WEIGHTS), target)  # weights are left out of the release
        infer = ["--categorical", *ACS_CODES, "--rules", str(HERE / "acs_rules.json")]
        dictionary = json.loads((ACS / "data_dictionary.json").read_text())
    else:
        public, private = DEMO / "cps_1992.parquet", DEMO / "cps_2004.parquet"
        infer, dictionary = [], {}
    schema_path, synthetic = work / f"{pair}_schema.json", work / f"{pair}_synthetic.parquet"
    model, report_path = work / f"{pair}.tabsynth", work / f"{pair}_privacy_report.json"
    tabsynth("schema", "infer", str(public), "-o", str(schema_path), *infer, log=log)
    tabsynth("convert", str(private), str(synthetic), "--epsilon", f"{epsilon:g}", "--public", str(public),
             "--schema", str(schema_path), "--model", str(model), "--report", str(report_path),
             "--seed", str(seed), "--quiet", log=log)
    tabsynth("report", str(model), log=log)

    real, fake = pd.read_parquet(private), pd.read_parquet(synthetic)
    schema = Schema.from_json(schema_path.read_text())
    report = json.loads(report_path.read_text())
    invalid_codes = {}
    for column in real.columns:
        codes = valid_codes(dictionary, column)
        if codes is not None:
            invalid_codes[column] = float((~fake[column].dropna().astype(str).isin(codes)).mean())
    allowed = {c.name: set(c.categories) for c in schema.columns if hasattr(c, "categories")}
    outside_schema = {name: float((~fake[name].dropna().isin(levels)).mean()) for name, levels in allowed.items()}
    fidelity = fidelity_report(real, fake)
    return {
        "pair": pair, "epsilon_budget": epsilon, "commands": log,
        "rows": {"public": pq.read_metadata(public).num_rows, "private": len(real), "synthetic": len(fake)},
        "privacy": {key: report[key] for key in ("epsilon", "delta", "accountant", "noise_multiplier", "steps")}
        | {"ledger": [(e["purpose"], e["epsilon"], e["delta"]) for e in report["ledger"]["entries"]]},
        "same_arrow_types": pq.read_schema(synthetic).remove_metadata().equals(pq.read_schema(private).remove_metadata()),
        "invalid_code_share": invalid_codes, "outside_schema_share": outside_schema,
        "rule_violation_share": {str(rule): float(1 - rule.satisfied(fake).mean()) for rule in schema.rules},
        "null_share": {c: [float(real[c].isna().mean()), float(fake[c].isna().mean())]
                       for c in real.columns if real[c].isna().any() or fake[c].isna().any()},
        "tvd_1way": fidelity["tvd_1way_mean"], "tvd_2way": fidelity["tvd_2way_mean"],
        "tvd_2way_cat": fidelity["tvd_2way_cat_mean"],
    }


def render(results: list[dict[str, Any]], command: str) -> str:
    lines = ["# tabsynth census-style release", "", f"- command: `{command}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", ""]
    for r in results:
        lines += [f"## {r['pair']}: ε budget {r['epsilon_budget']:g}", "",
                  f"rows: {r['rows']['public']:,} public, {r['rows']['private']:,} private, "
                  f"{r['rows']['synthetic']:,} synthetic", "", "| command | seconds |", "|---|---|"]
        lines += [f"| `{c['command']}` | {c['seconds']:.1f} |" for c in r["commands"]]
        p = r["privacy"]
        lines += ["", f"privacy: ε = {p['epsilon']:.4f}, δ = {p['delta']:.3g} ({p['accountant']}), "
                      f"noise multiplier {p['noise_multiplier']:.3f}, {p['steps']} DP-SGD steps; ledger: "
                  + "; ".join(f"{purpose} ε={e:.4f} δ={d:.2g}" for purpose, e, d in p["ledger"]), "",
                  f"- Parquet types identical to the private input's: {r['same_arrow_types']}",
                  f"- share of synthetic codes not in the data dictionary: "
                  f"{max(r['invalid_code_share'].values(), default=0.0):.4f} (worst column)",
                  f"- share of synthetic values outside the schema's categories: "
                  f"{max(r['outside_schema_share'].values(), default=0.0):.4f} (worst column)",
                  f"- edit rules: {len(r['rule_violation_share'])}, worst violation share "
                  f"{max(r['rule_violation_share'].values(), default=0.0):.4f}",
                  f"- marginal TVD against the private year: 1-way {r['tvd_1way']:.3f}, 2-way {r['tvd_2way']:.3f}, "
                  f"categorical pairs {r['tvd_2way_cat']:.3f}", ""]
        if r["null_share"]:
            lines += ["| column | null share, private | null share, synthetic |", "|---|---|---|"]
            lines += [f"| {c} | {a:.3f} | {b:.3f} |" for c, (a, b) in r["null_share"].items()]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=("acs", "cps"), default=["acs", "cps"])
    parser.add_argument("--epsilon", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the inputs, model, report and synthetic files here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tabsynth-census-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [release(pair, args.epsilon, work, args.seed) for pair in args.pairs]
    command = "python benchmarks/census_release.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "census_release.json").write_text(json.dumps({"command": command, "results": results,
                                                              "peak_rss_mb": peak_rss_mb(include_children=True)},
                                                             indent=2, default=str))
    markdown = render(results, command)
    (args.out / "census_release.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
