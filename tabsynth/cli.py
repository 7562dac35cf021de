"""The ``tabsynth`` command line: infer a schema, fit a DP model, sample, report and evaluate.

Every command reads its inputs, does its work, and only then moves its outputs into place
(each written to a temporary file beside the target and renamed), so a failed run never
leaves a half-written file behind. Errors print one line ``tabsynth: error: ...`` on stderr
and exit with a documented code (see ``EXIT_CODES_HELP``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tabsynth import __version__
from tabsynth.datasets import load_demo
from tabsynth.evaluate import fidelity_report, out_of_domain_fraction, sampling_floor, tstr
from tabsynth.io import PARQUET_SUFFIXES, is_csv, new_file_mode, open_table, storable_frame, write_parquet
from tabsynth.privacy.ledger import BudgetExceededError
from tabsynth.rules import RulesUnmetError
from tabsynth.schema import Schema, SchemaError
from tabsynth.synthesizer import ModelFileError, Settings, Synthesizer

__all__ = ["EXIT_BUDGET", "EXIT_DATA", "EXIT_MODEL", "EXIT_OK", "EXIT_UNEXPECTED", "EXIT_USAGE",
           "CLIError", "build_parser", "main"]

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_BUDGET = 4
EXIT_MODEL = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  unexpected error (a bug: rerun with --traceback and report it)
  2  usage error: bad arguments, an output that already exists (without --overwrite),
     an output path that is also an input or that cannot be created
  3  bad input data or schema: a missing input file, an unreadable table, a table that
     does not match the schema, a malformed schema, edit rules the model's rows cannot meet
  4  privacy budget problem: epsilon/delta out of range or unreachable, budget exceeded
  5  corrupt or unreadable model file
  130  interrupted (Ctrl-C); no output was written"""

DEMO_PUBLIC = "cps_1992"
DEMO_PRIVATE = "cps_2004"
DEMO_MARGINAL_STEPS = 1000  # the demo's 4 columns: 2-way TVD 0.137 as with 3,000 (0.138), in 14 s, not 36
DEMO_THREADS = 1  # the demo's small networks gain ~10% from a 2nd thread but slow ~10x on a busy CPU
DEMO_FILES = ("synthetic.parquet", "model.tabsynth", "privacy_report.json")
_BUDGET_WORDS = re.compile(r"\b(epsilon|delta)\b", re.IGNORECASE)


class CLIError(Exception):
    """An error with a one-line message and the exit code it maps to."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- argument types ------------------------------------------------------------------------


def _number_type(convert: type, description: str, accept: Callable[[float], bool]) -> Callable[[str], Any]:
    """An argparse type that converts with ``convert`` and refuses values ``accept`` rejects."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return parse


_positive_int = _number_type(int, "a positive integer", lambda v: v >= 1)
_non_negative_int = _number_type(int, "a non-negative integer", lambda v: v >= 0)
_positive_float = _number_type(float, "a positive number", lambda v: v > 0)


def _number(text: str) -> float:
    """argparse type: any number (range checks on epsilon/delta happen later, with exit code 4)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# --- privacy arguments ---------------------------------------------------------------------


def _check_budget(epsilon: float, delta: float | None) -> None:
    """Reject an epsilon or delta no fit could accept (exit code 4)."""
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise CLIError(f"--epsilon must be a positive finite number, got {epsilon:g}", EXIT_BUDGET)
    if delta is not None and not (0 < delta < 1):
        raise CLIError(f"--delta must lie strictly between 0 and 1 (typically 1e-5 or smaller), got {delta:g}",
                       EXIT_BUDGET)


def _fit(synthesizer: Synthesizer, private: pd.DataFrame, epsilon: float, delta: float | None,
         schema: Schema | None, public: pd.DataFrame | None) -> None:
    """Fit, turning the library's ValueErrors about epsilon/delta into exit code 4."""
    try:
        synthesizer.fit(private, epsilon=epsilon, delta=delta, schema=schema, public=public)
    except (SchemaError, BudgetExceededError):
        raise
    except ValueError as exc:
        if _BUDGET_WORDS.search(str(exc)):
            raise CLIError(str(exc), EXIT_BUDGET) from exc
        raise


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Limit PyTorch's CPU threads for one command, then restore the previous count."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _make_synthesizer(**settings: Any) -> Synthesizer:
    """A Synthesizer from the settings given on the command line (None means the default)."""
    given = {k: v for k, v in settings.items() if v is not None}
    device = given.get("device", "auto")
    if str(device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CLIError(f"--device {device} was requested but CUDA is not available on this machine; "
                           f"use --device cpu or --device auto", EXIT_USAGE)
    try:
        return Synthesizer(**given)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"invalid training setting: {exc}", EXIT_USAGE) from exc


# --- files ---------------------------------------------------------------------------------


def _require_input(path: str, what: str) -> Path:
    """The input path, or exit code 3 naming it when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{what} not found: {p}", EXIT_DATA)
    return p


def _read_table(path: str, what: str, *, public: bool = False) -> pd.DataFrame:
    """A Parquet file, a directory of Parquet files, or a CSV file (by extension) as a DataFrame
    (``public``: see ``open_table``)."""
    return open_table(_require_input(path, what), what, public=public).read()


def _read_text(path: str, what: str) -> tuple[Path, str]:
    """The path and UTF-8 text of an input file; an unreadable one exits 3 naming ``what``."""
    p = _require_input(path, what)
    try:
        return p, p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read {what} {p}: {exc}", EXIT_DATA) from exc


def _read_schema(path: str) -> Schema:
    """A schema JSON file written by `tabsynth schema infer` (or by hand)."""
    p, text = _read_text(path, "schema file")
    try:
        return Schema.from_json(text)
    except SchemaError as exc:
        raise CLIError(f"schema file {p}: {exc}", EXIT_DATA) from exc


def _with_rules(schema: Schema, path: str) -> Schema:
    """``schema`` with the edit rules of a JSON file (a list of rule objects)."""
    p, text = _read_text(path, "rules file")
    try:
        return Schema.from_dict({**schema.to_dict(), "rules": json.loads(text)})
    except (json.JSONDecodeError, SchemaError) as exc:
        raise CLIError(f"rules file {p}: {exc}", EXIT_DATA) from exc


def _load_model(path: str) -> Synthesizer:
    """A fitted model file; a missing file exits 3, a corrupt one 5."""
    return Synthesizer.load(_require_input(path, "model file"))


def _table_output_format(path: Path) -> str:
    """'csv' or 'parquet' from the output file name; anything else is a usage error."""
    if is_csv(path):
        return "csv"
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise CLIError(f"cannot tell the output format from {str(path)!r}: name it *.parquet or *.csv", EXIT_USAGE)


def _same_or_inside(output: Path, source: Path) -> bool:
    """True when ``output`` is the file ``source`` or lies inside the directory ``source``."""
    out, src = output.resolve(), source.resolve()
    if out == src:
        return True
    if source.exists() and output.exists() and os.path.samefile(output, source):
        return True
    return source.is_dir() and src in out.parents


def _check_output(path: str, inputs: Sequence[str | None], overwrite: bool) -> Path:
    """The output path, refused if it is an input, a directory, or an existing file without --overwrite."""
    out = Path(path)
    for source in inputs:
        if source is not None and _same_or_inside(out, Path(source)):
            raise CLIError(f"output {out} is also an input ({source}); choose another output path", EXIT_USAGE)
    if out.is_dir():
        raise CLIError(f"output {out} is a directory; give a file path", EXIT_USAGE)
    if out.exists() and not overwrite:
        raise CLIError(f"output {out} already exists; pass --overwrite to replace it", EXIT_USAGE)
    return out


@contextlib.contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, delete it on failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name ends with the target's name, so pandas infers the same compression from it.
        fd, name = tempfile.mkstemp(prefix=".tabsynth-", suffix=f"-{path.name}", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise CLIError(f"cannot create output {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    tmp = Path(name)
    try:
        try:
            yield tmp
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, path)
        except OSError as exc:
            raise CLIError(f"cannot write output {path}: {exc.strerror or exc}", EXIT_UNEXPECTED) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_table(frame: pd.DataFrame, tmp: Path, fmt: str) -> None:
    """Write a DataFrame as Parquet or CSV (no index)."""
    if fmt == "csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)


def _write_synthetic(synthesizer: Synthesizer, n: int, seed: int | None, out: Path, quiet: bool) -> None:
    """Sample ``n`` rows into ``out``: Parquet row group by row group in the training input's Arrow
    types (bounded memory), or CSV; atomically, with a progress bar."""
    fmt = _table_output_format(out)
    with _atomic_output(out) as tmp, tqdm(total=n, desc="Sampling", unit="row", unit_scale=True,
                                          disable=quiet) as bar:
        batches = synthesizer.sample_batches(n, seed=seed)
        if fmt == "parquet":
            write_parquet(batches, tmp, synthesizer.arrow_schema_, on_rows=bar.update)
        else:  # CSV is for small outputs: one frame, its values as the input's types hold them
            frame = storable_frame(pd.concat(list(batches), ignore_index=True), synthesizer.arrow_schema_)
            bar.update(len(frame))
            _write_table(frame, tmp, fmt)


def _write_text(text: str, tmp: Path) -> None:
    """Write UTF-8 text ending with a newline."""
    tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


# --- printing ------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, so the output is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _dumps(data: Any) -> str:
    """Strict, indented JSON."""
    return json.dumps(_json_safe(data), indent=2, allow_nan=False)


def _privacy_summary(report: dict[str, Any]) -> list[str]:
    """Human-readable lines for a privacy report."""
    lines = [
        f"Privacy guarantee: ({report['epsilon']:.4g}, {report['delta']:.3g})-differential privacy "
        f"(budget epsilon={report['epsilon_budget']:.4g}, delta={report['delta_budget']:.3g})",
        f"  unit of privacy: {report['unit_of_privacy']}",
        f"  accountant:      {report['accountant']}",
        f"  DP-SGD:          {report['steps']} discriminator steps, noise multiplier "
        f"{report['noise_multiplier']:.4g}, {report['sampling']} sampling rate {report['sample_rate']:.4g} "
        f"(expected batch {report['expected_batch_size']:.0f})",
    ]
    marginals = report.get("marginals")
    if marginals:
        lines.append(f"  DP marginals:    {marginals['one_way_marginals']} one-way (noise std "
                     f"{marginals['one_way_noise_std']:.3g}) and {marginals['two_way_marginals']} two-way "
                     f"(noise std {marginals['two_way_noise_std']:.3g}), one Gaussian mechanism of noise "
                     f"multiplier {marginals['marginal_noise_multiplier']:.4g} composed with DP-SGD")
    entries = report.get("ledger", {}).get("entries", [])
    for key, label in (("domain_discovery", "DP discovery:    the domain"), ("new_categories", "DP discovery:    new categories")):
        discovery = next((e["details"][key] for e in entries if key in e.get("details", {})), None)
        if discovery and discovery["mu"] > 0:
            lines.append(f"  {label}, one Gaussian release of mu {discovery['mu']:.4g} "
                         f"({discovery['zcdp_share']:.0%} of the joint zCDP budget), composed with the above; "
                         f"its thresholds delta={discovery['delta_thresholds']:.3g}")
    for entry in entries:
        lines.append(f"  ledger:          {entry['purpose']}: epsilon={entry['epsilon']:.4g}, "
                     f"delta={entry['delta']:.3g} ({entry['mechanism']})")
    return lines


def _schema_lines(schema: Schema) -> list[str]:
    """One line per column: name, kind and domain."""
    lines = []
    for column in schema.columns:
        if column.kind in ("continuous", "integer"):
            domain = f"[{column.lower:g}, {column.upper:g}]"  # type: ignore[attr-defined]
        elif column.kind == "categorical":
            levels = column.levels  # type: ignore[attr-defined]
            shown = ", ".join(repr(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
            domain = f"{len(levels)} categories: {shown}"
        elif column.kind in ("datetime", "duration"):
            domain = f"[{column.lower}, {column.upper}]"  # type: ignore[attr-defined]
        elif column.kind == "geo":
            domain = f"lat={column.lat}, lon={column.lon}"  # type: ignore[attr-defined]
        else:
            domain = ""
        nullable = ", nullable" if column.nullable else ""
        lines.append(f"  {column.name:<16} {column.kind:<12} {domain}{nullable}")
    return lines


def _print(lines: Sequence[str] | str) -> None:
    """Print lines to stdout."""
    print(lines if isinstance(lines, str) else "\n".join(lines))


def _note(message: str) -> None:
    """A one-line note on stderr (kept off stdout so it never mixes with JSON)."""
    print(f"tabsynth: note: {message}", file=sys.stderr)


# --- commands ------------------------------------------------------------------------------


def cmd_schema_infer(args: argparse.Namespace) -> int:
    """tabsynth schema infer PUBLIC -o SCHEMA."""
    out = _check_output(args.output, [args.public, args.rules], args.overwrite)
    public = _read_table(args.public, "public table", public=True)
    unknown = sorted(set(args.categorical) - set(public.columns))
    if unknown:
        raise CLIError(f"--categorical names columns {unknown} that are not in {args.public}", EXIT_USAGE)
    schema = Schema.infer(public, max_categories=args.max_categories,
                          overrides={name: "categorical" for name in args.categorical})
    if args.rules:
        schema = _with_rules(schema, args.rules)
    with _atomic_output(out) as tmp:
        _write_text(schema.to_json(), tmp)
    _print([f"Inferred a schema for {len(schema.column_order)} columns from {args.public} "
            f"({len(public):,} public rows):", *_schema_lines(schema), f"Wrote {out}"])
    return EXIT_OK


def cmd_fit(args: argparse.Namespace) -> int:
    """tabsynth fit PRIVATE -o MODEL --epsilon E."""
    _check_budget(args.epsilon, args.delta)
    out = _check_output(args.output, [args.private, args.public, args.schema], args.overwrite)
    synthesizer, started = _fit_from_args(args)
    with _atomic_output(out) as tmp:
        synthesizer.save(tmp)
    if not args.quiet:
        _print(f"Trained on {args.private} in {time.perf_counter() - started:.1f} s; wrote model {out}")
    _print(_privacy_summary(synthesizer.privacy_report()))
    return EXIT_OK


def _fit_from_args(args: argparse.Namespace) -> tuple[Synthesizer, float]:
    """Fit on the private table named by ``args`` (streamed when it is Parquet); returns the start time."""
    synthesizer = _make_synthesizer(steps=args.steps, epochs=args.epochs, batch_size=args.batch_size,
                                    marginal_steps=args.marginal_steps, seed=args.seed, device=args.device,
                                    verbose=not args.quiet)
    private = _require_input(args.private, "private table")
    public = _require_input(args.public, "public table") if args.public else None
    schema = _read_schema(args.schema) if args.schema else None
    if public is None and schema is None:
        if is_csv(private):
            raise CLIError(f"{private} is a CSV file, whose column types would be inferred from the private "
                           f"values (one record can turn a column of numbers into text); give --schema "
                           f"(`tabsynth schema infer PUBLIC -o SCHEMA` writes one) or --public, or store the "
                           f"table as Parquet with declared types", EXIT_USAGE)
        share = Settings.discovery_fraction
        _note(f"no --schema or --public given: column domains are discovered from the private table "
              f"under DP, which spends {share:.0%} of the zCDP budget left after the row count "
              f"(composed with the marginals and DP-SGD by the accountant)")
    started = time.perf_counter()
    with _torch_threads(args.threads):
        _fit(synthesizer, private, args.epsilon, args.delta, schema, public)
    return synthesizer, started


def cmd_convert(args: argparse.Namespace) -> int:
    """tabsynth convert PRIVATE OUT --epsilon E: fit and sample in one step."""
    _check_budget(args.epsilon, args.delta)
    inputs = [args.private, args.public, args.schema]
    out = _check_output(args.output, inputs, args.overwrite)
    _table_output_format(out)
    extras = [_check_output(path, inputs, args.overwrite) for path in (args.model, args.report) if path]
    if len({p.resolve() for p in (out, *extras)}) < 1 + len(extras):
        raise CLIError("OUT, --model and --report must be different files", EXIT_USAGE)
    synthesizer, started = _fit_from_args(args)
    rows = args.rows or synthesizer.row_count_
    if not args.quiet and not args.rows:
        _note(f"sampling {rows:,} rows, the DP estimate of the private row count (set --rows to choose)")
    with contextlib.ExitStack() as stack:  # every output is renamed into place only if all were written
        if args.model:
            synthesizer.save(stack.enter_context(_atomic_output(Path(args.model))))
        if args.report:
            _write_text(_dumps(synthesizer.privacy_report()), stack.enter_context(_atomic_output(Path(args.report))))
        _write_synthetic(synthesizer, rows, args.seed, out, args.quiet)
    if not args.quiet:
        _print(f"Wrote {rows:,} synthetic rows to {out} in {time.perf_counter() - started:.1f} s")
    _print(_privacy_summary(synthesizer.privacy_report()))
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    """tabsynth sample MODEL -n N -o OUT."""
    out = _check_output(args.output, [args.model], args.overwrite)
    _table_output_format(out)
    synthesizer = _load_model(args.model)
    rows = args.n or synthesizer.row_count_
    _write_synthetic(synthesizer, rows, args.seed, out, args.quiet)  # no seed: fresh rows on every run
    _print(f"Wrote {rows:,} synthetic rows ({len(synthesizer.schema_.column_order)} columns) to {out}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """tabsynth report MODEL."""
    _print(_dumps(_load_model(args.model).privacy_report()))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    """tabsynth evaluate REAL SYNTHETIC [--target COL] [--test REAL_TEST] [--floor]."""
    # An evaluation is read by the steward, not released: the tables' types come from their values.
    real = _read_table(args.real, "real table", public=True)
    synthetic = _read_table(args.synthetic, "synthetic table", public=True)
    result: dict[str, Any] = {
        "fidelity": fidelity_report(real, synthetic),
        "out_of_domain": out_of_domain_fraction(real, synthetic),
    }
    if args.floor:
        result["sampling_floor"] = sampling_floor(real, len(synthetic))
    if args.target is not None:
        test = _read_table(args.test, "test table", public=True) if args.test else real
        result["tstr"] = tstr(synthetic, test, args.target)
    _print(_dumps(result))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """tabsynth demo: public 1992 CPS as the prior, private 2004 CPS as the table to protect."""
    _check_budget(args.epsilon, None)
    targets: list[Path] = []
    if args.out is not None:
        out_dir = Path(args.out)
        if out_dir.exists() and not out_dir.is_dir():
            raise CLIError(f"--out {out_dir} exists and is not a directory", EXIT_USAGE)
        targets = [_check_output(str(out_dir / name), [], args.overwrite) for name in DEMO_FILES]
    started = time.perf_counter()
    public, private = load_demo(DEMO_PUBLIC), load_demo(DEMO_PRIVATE)
    _print([f"tabsynth demo: public prior year {DEMO_PUBLIC} ({len(public):,} rows), "
            f"private current year {DEMO_PRIVATE} ({len(private):,} rows), epsilon={args.epsilon:g}",
            "The schema (column kinds and domains) comes from the public year only; numbers of the "
            "private year outside it are clipped to it, and categories it lacks are looked for under DP "
            "(rows holding one that DP cannot release are left out of training)."])
    sys.stdout.flush()
    synthesizer = _make_synthesizer(steps=args.steps, marginal_steps=args.marginal_steps,
                                    seed=args.seed, verbose=not args.quiet)
    with _torch_threads(args.threads):
        _fit(synthesizer, private, args.epsilon, None, None, public)
    synthetic = synthesizer.sample(args.rows, seed=args.seed)
    report = synthesizer.privacy_report()
    fidelity = fidelity_report(private, synthetic)
    _print(["", f"Schema inferred from {DEMO_PUBLIC}:", *_schema_lines(synthesizer.schema_), "",
            *_privacy_summary(report), "",
            f"First rows of {len(synthetic):,} synthetic rows:", synthetic.head(5).to_string(index=False), "",
            "Fidelity vs the private table (total variation distance: 0 = identical, 1 = disjoint):",
            f"  1-way marginals: mean {fidelity['tvd_1way_mean']:.3f}, worst {fidelity['tvd_1way_max']:.3f} "
            f"({' x '.join(fidelity['tvd_1way_worst'] or ())})",
            f"  2-way marginals: mean {fidelity['tvd_2way_mean']:.3f}, worst {fidelity['tvd_2way_max']:.3f} "
            f"({' x '.join(fidelity['tvd_2way_worst'] or ())})",
            "  (computed on the private table itself: fine for a demo, but these numbers are not "
            "differentially private)"])
    if targets:
        synthetic_path, model_path, report_path = targets
        with contextlib.ExitStack() as stack:  # all three are renamed into place only if all were written
            _write_table(synthetic, stack.enter_context(_atomic_output(synthetic_path)), "parquet")
            synthesizer.save(stack.enter_context(_atomic_output(model_path)))
            _write_text(_dumps(report), stack.enter_context(_atomic_output(report_path)))
        _print(["", f"Wrote {', '.join(str(t) for t in targets)}"])
    _print(f"Done in {time.perf_counter() - started:.1f} s.")
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the line breaks of descriptions and epilogs (examples, exit codes)."""


def _wrap(text: str) -> str:
    """A description paragraph wrapped for the terminal."""
    return textwrap.fill(text, width=min(100, shutil.get_terminal_size().columns - 2))


def _add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The shared --overwrite flag."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing output files (by default tabsynth refuses)")


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The PRIVATE input, budget, domain source and training options shared by `fit` and `convert`."""
    parser.add_argument("private", metavar="PRIVATE",
                        help="private table: a Parquet file, a directory of Parquet files, or a .csv file")
    parser.add_argument("--epsilon", type=_number, required=True,
                        help="privacy budget epsilon (smaller is more private)")
    parser.add_argument("--delta", type=_number, default=None,
                        help="privacy budget delta (default: 1e-5, or smaller for tables over 10,000 rows)")
    parser.add_argument("--public", metavar="P", default=None,
                        help="public table with the same columns (e.g. last year's release): training starts "
                             "from it and it sets the clipping bounds, at no privacy cost; without --schema the "
                             "schema is inferred from it. Private categories it lacks are looked for under DP "
                             f"({Settings.new_category_fraction:.0%} of the zCDP budget left after the row count)".replace("%", "%%"))
    parser.add_argument("--schema", metavar="S", default=None,
                        help="schema JSON file (see `tabsynth schema infer`); may be combined with --public")
    parser.add_argument("--steps", type=_positive_int, default=None, help="discriminator steps (overrides --epochs)")
    parser.add_argument("--epochs", type=_positive_float, default=None,
                        help=f"passes over the data (default {Settings.epochs:g}), at most "
                             f"{Settings.max_steps:,} steps")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help=f"expected batch size (default {Settings.batch_size})")
    parser.add_argument("--marginal-steps", type=_non_negative_int, default=None,
                        help=f"generator steps fitting the DP marginals before the GAN steps (free; default "
                             f"{Settings.marginal_steps})")
    parser.add_argument("--seed", type=_non_negative_int, default=None,
                        help="seed for the model's own randomness (initialisation, generator noise, sampling); "
                             "the privacy noise is never seeded")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="where to train (default auto: a GPU if there is one)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="CPU threads for PyTorch (default: PyTorch's choice, one per core); 1 is often "
                             "faster for small tables or on a busy machine")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="tabsynth", formatter_class=_Formatter,
        description=_wrap("Differentially private synthetic tables: train a DP-GAN on a private table, "
                          "then sample as many synthetic rows as you like. Only `fit` (and `demo`) read "
                          "private data and spend privacy budget; everything after it is free post-processing."),
        epilog="typical workflow:\n"
               "  tabsynth schema infer public.parquet -o schema.json\n"
               "  tabsynth fit private.parquet --schema schema.json --epsilon 1 -o model.tabsynth\n"
               "  tabsynth report model.tabsynth\n"
               "  tabsynth sample model.tabsynth -n 10000 -o synthetic.parquet\n"
               "  tabsynth evaluate private.parquet synthetic.parquet\n"
               "or in one step:\n"
               "  tabsynth convert private.parquet synthetic.parquet --public public.parquet --epsilon 1\n"
               "first time? try:  tabsynth demo\n\n" + EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"tabsynth {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="on an error, print the full Python traceback (for bug reports)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    demo = commands.add_parser(
        "demo", formatter_class=_Formatter, help="run the census demo on shipped data",
        description=_wrap(f"End-to-end demo on shipped census data: the {DEMO_PUBLIC} table plays the public "
                          f"prior-year release (the schema is inferred from it), {DEMO_PRIVATE} the private "
                          f"current-year table that the model is trained on under differential privacy. "
                          f"Prints the schema, the privacy guarantee, a few synthetic rows and their fidelity."),
        epilog="example:\n  tabsynth demo --epsilon 2 --rows 5000 --out demo_out\n\n" + EXIT_CODES_HELP)
    demo.add_argument("--epsilon", type=_number, default=1.0,
                      help="privacy budget epsilon, smaller is more private (default 1)")
    demo.add_argument("--rows", type=_positive_int, default=1000,
                      help="number of synthetic rows to sample (default 1000)")
    demo.add_argument("--steps", type=_positive_int, default=None,
                      help="discriminator steps (default: the Synthesizer's epochs' worth)")
    demo.add_argument("--marginal-steps", type=_non_negative_int, default=DEMO_MARGINAL_STEPS,
                      help=f"generator steps fitting the DP marginals (default {DEMO_MARGINAL_STEPS})")
    demo.add_argument("--seed", type=_non_negative_int, default=None, help="seed for the model's own randomness (initialisation, generator noise); the privacy noise is never seeded")
    demo.add_argument("--out", metavar="DIR", default=None,
                      help=f"also write {', '.join(DEMO_FILES)} into DIR (created if needed)")
    demo.add_argument("--threads", type=_positive_int, default=DEMO_THREADS,
                      help=f"CPU threads for PyTorch (default {DEMO_THREADS}: the demo's small networks gain "
                           f"little from more, and extra threads slow down badly on a busy machine)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_overwrite(demo)
    demo.set_defaults(handler=cmd_demo)

    schema = commands.add_parser(
        "schema", formatter_class=_Formatter, help="work with schemas (column kinds and domains)",
        description=_wrap("A schema lists every column's kind and domain (bounds, categories). It must come "
                          "from public knowledge, never from the private table."),
        epilog="example:\n  tabsynth schema infer public_2023.parquet -o schema.json\n\n" + EXIT_CODES_HELP)
    schema_commands = schema.add_subparsers(dest="schema_command", metavar="SUBCOMMAND", title="subcommands")
    infer = schema_commands.add_parser(
        "infer", formatter_class=_Formatter, help="infer a schema from a PUBLIC table",
        description=_wrap("Infer a schema from a table you declare PUBLIC (for example last year's published "
                          "release). Do not run this on private data: the schema is stored in the model "
                          "file in the clear. Edit the JSON afterwards to widen bounds or add categories."),
        epilog="examples:\n  tabsynth schema infer public.parquet -o schema.json\n"
               "  tabsynth schema infer public_parts/ -o schema.json --max-categories 50\n"
               "  tabsynth schema infer public.csv -o schema.json\n"
               "  tabsynth schema infer acs_2018.parquet -o schema.json --categorical SEX RAC1P INDP\n\n"
               + EXIT_CODES_HELP)
    infer.add_argument("public", metavar="PUBLIC",
                       help="public table: a Parquet file, a directory of Parquet files, or a .csv file")
    infer.add_argument("-o", "--output", required=True, metavar="SCHEMA", help="schema JSON file to write")
    infer.add_argument("--max-categories", type=_positive_int, default=256,
                       help="text columns with more levels keep the most frequent and fold the rest "
                            "into '<other>' (default 256)")
    infer.add_argument("--rules", metavar="RULES", default=None,
                       help="JSON file with a list of edit rules every synthetic record must satisfy, e.g. "
                            '[{"when": {"column": "AGEP", "op": "<", "value": 15}, '
                            '"then": {"column": "PINCP", "op": "is null"}, "iff": true}]'.replace("%", "%%"))
    infer.add_argument("--categorical", nargs="+", metavar="COL", default=[],
                       help="columns to treat as categories whatever their type (e.g. integer codes such as "
                            "industry or race codes, which must stay valid codes rather than become numbers)")
    _add_overwrite(infer)
    infer.set_defaults(handler=cmd_schema_infer)

    fit = commands.add_parser(
        "fit", formatter_class=_Formatter, help="train a DP model on a private table",
        description=_wrap("Train a DP-GAN on PRIVATE under (epsilon, delta)-differential privacy and save it. "
                          "The column domains come from --schema, from --public (a public table with the same "
                          "columns), or, with neither, are discovered from the private table under DP (costing "
                          "part of the budget). The privacy unit is one row: aggregate to one row per person first."),
        epilog="examples:\n  tabsynth fit private.parquet --public public.parquet --epsilon 1 -o model.tabsynth\n"
               "  tabsynth fit private.csv --schema schema.json --epsilon 3 --delta 1e-6 -o model.tabsynth\n\n"
               + EXIT_CODES_HELP)
    _add_training_arguments(fit)
    fit.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")
    _add_overwrite(fit)
    fit.set_defaults(handler=cmd_fit)

    sample = commands.add_parser(
        "sample", formatter_class=_Formatter, help="sample synthetic rows from a model",
        description=_wrap("Sample synthetic rows from a fitted model. This reads no private data and spends "
                          "no privacy budget. Without --seed each run draws different rows."),
        epilog="examples:\n  tabsynth sample model.tabsynth -n 10000 -o synthetic.parquet\n"
               "  tabsynth sample model.tabsynth -n 500 -o synthetic.csv --seed 7\n\n" + EXIT_CODES_HELP)
    sample.add_argument("model", metavar="MODEL", help="model file written by `tabsynth fit`")
    sample.add_argument("-n", type=_positive_int, default=None, metavar="N",
                        help="number of rows (default: the model's DP estimate of the private row count)")
    sample.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="output table: *.parquet or *.csv (optionally .csv.gz etc.)")
    sample.add_argument("--seed", type=_non_negative_int, default=None, help="seed for reproducible rows")
    sample.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_overwrite(sample)
    sample.set_defaults(handler=cmd_sample)

    convert = commands.add_parser(
        "convert", formatter_class=_Formatter, help="private table in, synthetic table out (fit + sample)",
        description=_wrap("Train a DP model on PRIVATE and write a synthetic table to OUT in one step. A Parquet "
                          "input (a file or a directory of files) is streamed: it may be larger than memory, "
                          "and the Parquet output keeps its column types. OUT is written to a temporary file "
                          "beside it and renamed at the end, so a failed or interrupted run leaves nothing. "
                          "Without --rows, OUT gets as many rows as a DP estimate of the private row count "
                          "(the exact count is itself private)."),
        epilog="examples:\n"
               "  tabsynth convert acs_2019.parquet synthetic_2019.parquet --public acs_2018.parquet --epsilon 1\n"
               "  tabsynth convert private_parts/ synthetic.parquet --schema schema.json --epsilon 2 \\\n"
               "      --rows 1000000 --model model.tabsynth --report privacy_report.json\n\n" + EXIT_CODES_HELP)
    _add_training_arguments(convert)
    convert.add_argument("output", metavar="OUT", help="synthetic table to write: *.parquet or *.csv")
    convert.add_argument("--rows", type=_positive_int, default=None,
                         help="synthetic rows to write (default: the DP estimate of the private row count)")
    convert.add_argument("--model", metavar="MODEL", default=None, help="also save the model file here")
    convert.add_argument("--report", metavar="JSON", default=None, help="also write the privacy report here")
    _add_overwrite(convert)
    convert.set_defaults(handler=cmd_convert)

    report = commands.add_parser(
        "report", formatter_class=_Formatter, help="print a model's privacy report as JSON",
        description=_wrap("Print the privacy report stored in a model: the (epsilon, delta) spent, the "
                          "accountant, the DP-SGD parameters and the privacy ledger."),
        epilog="examples:\n  tabsynth report model.tabsynth\n"
               "  tabsynth report model.tabsynth > privacy_report.json\n\n" + EXIT_CODES_HELP)
    report.add_argument("model", metavar="MODEL", help="model file written by `tabsynth fit`")
    report.set_defaults(handler=cmd_report)

    evaluate = commands.add_parser(
        "evaluate", formatter_class=_Formatter, help="compare a synthetic table with a real one",
        description=_wrap("Print fidelity metrics as JSON: total variation distance of 1-way and 2-way "
                          "marginals and the share of out-of-domain values. With --target, also TSTR (train "
                          "classifiers on SYNTHETIC, test on --test or else REAL); with --floor, the same TVDs "
                          "for as many rows drawn from REAL itself. Metrics computed on private "
                          "data are not differentially private: do not publish them as such."),
        epilog="examples:\n  tabsynth evaluate private.parquet synthetic.parquet\n"
               "  tabsynth evaluate train.parquet synthetic.parquet --target income --test holdout.parquet\n\n"
               + EXIT_CODES_HELP)
    evaluate.add_argument("real", metavar="REAL", help="real table (Parquet file or directory, or .csv)")
    evaluate.add_argument("synthetic", metavar="SYNTHETIC", help="synthetic table (Parquet file or directory, or .csv)")
    evaluate.add_argument("--target", metavar="COL", default=None, help="label column for TSTR")
    evaluate.add_argument("--test", metavar="REAL_TEST", default=None,
                          help="held-out real table for TSTR (default: REAL); needs --target")
    evaluate.add_argument("--floor", action="store_true",
                          help="also report the sampling floor: the TVDs of as many rows as SYNTHETIC drawn with "
                               "replacement from REAL (what an i.i.d. sample of the real distribution scores; "
                               "a reference, not a lower bound)")
    evaluate.set_defaults(handler=cmd_evaluate)

    parser.set_defaults(handler=None, parser=parser)
    for sub in (demo, schema, infer, fit, sample, convert, report, evaluate):
        sub.set_defaults(parser=sub)
    return parser


# --- entry point ---------------------------------------------------------------------------


def _error(message: str, code: int) -> int:
    """Print one error line on stderr and return ``code``."""
    text = " ".join(str(message).split()) or "unknown error"
    print(f"tabsynth: error: {text}", file=sys.stderr)
    return code


def _exit_code(exc: BaseException) -> int:
    """Map an exception to its documented exit code."""
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, ModelFileError):
        return EXIT_MODEL
    if isinstance(exc, BudgetExceededError):
        return EXIT_BUDGET
    if isinstance(exc, (SchemaError, FileNotFoundError, ValueError, RulesUnmetError)):
        return EXIT_DATA
    return EXIT_UNEXPECTED


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (a scheduler's kill) like Ctrl-C, so temporary outputs and scratch files are removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_NEGATIVE_NUMBER = re.compile(r"-(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|-inf(?:inity)?|-nan", re.IGNORECASE)


def _negative_numbers_attached(argv: list[str]) -> list[str]:
    """``--delta -1e-5`` as ``--delta=-1e-5``: argparse takes "-1e-5" for an option (its pattern of
    negative numbers has no exponent) and says only "expected one argument"; attached, the value
    reaches the option's own check, which names the range it needs."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and out[-1] != "--" and "=" not in out[-1] \
                and _NEGATIVE_NUMBER.fullmatch(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]) and return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(_negative_numbers_attached(sys.argv[1:] if argv is None else list(argv)))
    except SystemExit as exc:  # --help, --version, usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else (EXIT_OK if exc.code is None else EXIT_USAGE)
    handler: Callable[[argparse.Namespace], int] | None = args.handler
    if handler is None:
        args.parser.print_help(sys.stderr)
        return EXIT_USAGE
    if getattr(args, "test", None) and getattr(args, "target", None) is None:
        args.parser.print_usage(sys.stderr)
        return _error("--test needs --target (the label column for TSTR)", EXIT_USAGE)
    try:
        with _sigterm_as_interrupt():
            return handler(args)
    except KeyboardInterrupt:
        return _error("interrupted; no output was written", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - every error becomes one line and an exit code
        if args.traceback:
            import traceback

            traceback.print_exc()
        code = _exit_code(exc)
        if code == EXIT_UNEXPECTED:
            return _error(f"unexpected {type(exc).__name__}: {exc} (rerun with --traceback and report it)", code)
        return _error(str(exc), code)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
