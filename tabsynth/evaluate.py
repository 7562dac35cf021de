"""Utility and fidelity metrics for comparing a real table with a synthetic one.

Everything here works on plain pandas DataFrames that share column names, so it can
be used on any synthesizer's output. The module deliberately imports nothing else
from ``tabsynth`` so that it stays usable (and cheap to import) on its own.

Conventions shared by all metrics:

* A column is *numeric* when its dtype is numeric (not bool) or datetime/timedelta.
  For the marginal metrics a numeric column is only binned when the real data has
  more than ``bins`` distinct values; otherwise its values are treated as categories.
* A missing value is a value: nulls form their own category in every marginal.
"""

from __future__ import annotations

import itertools
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = [
    "fidelity_report",
    "marginal_tvd",
    "out_of_domain_fraction",
    "peak_rss_mb",
    "sampling_floor",
    "summarize_tvd",
    "trtr",
    "tstr",
]

_MISSING = "__tabsynth_missing__"  # stand-in category for nulls in classifier features
_SUPPORTED_MODELS = ("hgb", "logreg")
_HGB_MAX_CATEGORIES = 255  # HistGradientBoosting needs categorical codes < max_bins (255)


# --------------------------------------------------------------------------- helpers


def _is_numeric_dtype(dtype: Any) -> bool:
    """True for numeric (non-bool) and datetime/timedelta dtypes, which are ordered."""
    if pd.api.types.is_bool_dtype(dtype):
        return False
    return (
        pd.api.types.is_numeric_dtype(dtype)
        or pd.api.types.is_datetime64_any_dtype(dtype)
        or pd.api.types.is_timedelta64_dtype(dtype)
        or _arrow_duration_unit(dtype) is not None
    )


def _arrow_duration_unit(dtype: Any) -> str | None:
    """The unit of an Arrow duration dtype (None for any other dtype), which pandas' tests do not count
    as a timedelta."""
    if isinstance(dtype, pd.ArrowDtype) and pa.types.is_duration(dtype.pyarrow_dtype):
        return str(dtype.pyarrow_dtype.unit)
    return None


def _numeric_values(series: pd.Series, column: str, *, coerce: bool = False) -> np.ndarray:
    """Float64 view of a numeric/datetime column with NaN for nulls (so it can be binned)."""
    unit = _arrow_duration_unit(series.dtype)
    if unit is not None:
        series = series.astype(f"timedelta64[{unit}]")
    dtype = series.dtype
    if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype):
        if isinstance(dtype, pd.DatetimeTZDtype):
            series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        kind = "timedelta64[ns]" if pd.api.types.is_timedelta64_dtype(dtype) else "datetime64[ns]"
        raw = series.to_numpy(dtype=kind)
        out = raw.view("i8").astype(np.float64)
        out[np.isnat(raw)] = np.nan
        return out
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        if not coerce:
            raise ValueError(
                f"column {column!r}: expected a numeric dtype (as in the real data), got {dtype}"
            )
        series = pd.to_numeric(series, errors="coerce")
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_frame(frame: Any, name: str) -> None:
    """Reject non-DataFrames and empty tables early with a message naming the argument."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    if len(frame) == 0:
        raise ValueError(f"{name} has no rows")


def _check_integer(name: str, value: Any, minimum: int) -> None:
    """Reject anything but an integer (bools included) below ``minimum``, naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _resolve_columns(
    real: pd.DataFrame, synthetic: pd.DataFrame, columns: Iterable[str] | None, stacklevel: int = 3
) -> list[str]:
    """Columns to compare: the given ones or all of real's, all present in both tables; without
    ``columns``, synthetic columns that real lacks are named in a warning (they are not scored)."""
    cols = list(real.columns) if columns is None else list(columns)
    unscored = [c for c in synthetic.columns if c not in real.columns] if columns is None else []
    if unscored:
        # ``stacklevel``: the caller's caller, a public function's user.
        warnings.warn(f"columns of synthetic that real lacks are not scored: {unscored}", UserWarning,
                      stacklevel=stacklevel)
    if not cols:
        raise ValueError("columns must name at least one column")
    if len(set(cols)) != len(cols):
        raise ValueError(f"columns contains duplicates: {cols}")
    missing_real = [c for c in cols if c not in real.columns]
    if missing_real:
        raise ValueError(f"columns missing from real: {missing_real}")
    missing_syn = [c for c in cols if c not in synthetic.columns]
    if missing_syn:
        raise ValueError(f"columns missing from synthetic: {missing_syn}")
    return cols


def _py(value: Any) -> Any:
    """Turn numpy scalars into plain Python values so results serialise to JSON."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- marginal TVD


class _Encoded:
    """Integer codes of one column in real and synthetic data, on a shared code book."""

    __slots__ = ("name", "real", "synthetic", "n_codes", "numeric")

    def __init__(
        self, name: str, real: np.ndarray, synthetic: np.ndarray, n_codes: int, numeric: bool
    ) -> None:
        self.name = name
        self.real = real
        self.synthetic = synthetic
        self.n_codes = n_codes
        self.numeric = numeric


def _encode_column(real: pd.Series, synthetic: pd.Series, name: str, bins: int) -> _Encoded:
    """Map a column to shared integer codes: quantile bins of real data, the nearest of a float column's
    few real values, or categories."""
    if _is_numeric_dtype(real.dtype) and real.nunique(dropna=True) > bins:
        r = _numeric_values(real, name)
        s = _numeric_values(synthetic, name)
        finite = r[~np.isnan(r)]
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
        # Right-closed bins (-inf, e0], (e0, e1], ..., (e_{m-2}, +inf): the real maximum
        # is replaced by +inf, so values beyond the real range land in the end bins, and
        # point masses (e.g. many zeros at the minimum) keep a bin of their own.
        inner = edges[:-1]
        n_values = inner.size + 1
        codes = []
        for values in (r, s):
            c = np.searchsorted(inner, values, side="left").astype(np.int64)
            c[np.isnan(values)] = n_values  # nulls are their own category
            codes.append(c)
        return _Encoded(name, codes[0], codes[1], n_values + 1, True)
    if pd.api.types.is_float_dtype(real.dtype) and _is_numeric_dtype(synthetic.dtype):
        # A float column of few real values (a density per area): each synthetic value counts towards
        # the nearest of them, so a generator of continuous values is not scored as all wrong.
        r, s = _numeric_values(real, name), _numeric_values(synthetic, name)
        levels = np.unique(r[~np.isnan(r)])
        midpoints = (levels[:-1] + levels[1:]) / 2.0
        codes = []
        for values in (r, s):
            c = np.searchsorted(midpoints, values, side="left").astype(np.int64)
            c[np.isnan(values)] = levels.size  # nulls are their own category
            codes.append(c)
        return _Encoded(name, codes[0], codes[1], levels.size + 1, True)
    both = pd.concat([real, synthetic], ignore_index=True)
    codes, uniques = pd.factorize(both, use_na_sentinel=True)
    codes = codes.astype(np.int64, copy=False)
    codes[codes < 0] = len(uniques)  # nulls are their own category
    n = len(real)
    return _Encoded(name, codes[:n], codes[n:], len(uniques) + 1, False)


def _tvd_from_codes(real: np.ndarray, synthetic: np.ndarray, n_codes: int) -> float:
    """0.5 * sum |p - q| of two empirical distributions given as integer codes."""
    p = np.bincount(real, minlength=n_codes) / real.size
    q = np.bincount(synthetic, minlength=n_codes) / synthetic.size
    return float(0.5 * np.abs(p - q).sum())


def _pair_tvd(a: _Encoded, b: _Encoded) -> float:
    """TVD of the joint distribution of two encoded columns."""
    n_joint = a.n_codes * b.n_codes
    real = a.real * b.n_codes + b.real
    synthetic = a.synthetic * b.n_codes + b.synthetic
    if n_joint > max(1 << 22, 4 * (real.size + synthetic.size)):
        # Very high-cardinality pair: compress the joint codes instead of a huge bincount.
        uniq, inverse = np.unique(np.concatenate([real, synthetic]), return_inverse=True)
        real, synthetic = inverse[: real.size], inverse[real.size :]
        n_joint = uniq.size
    return _tvd_from_codes(real, synthetic, n_joint)


def _encode_all(
    real: pd.DataFrame, synthetic: pd.DataFrame, bins: int, columns: Iterable[str] | None
) -> list[_Encoded]:
    """Validate the inputs and encode every compared column once."""
    _check_frame(real, "real")
    _check_frame(synthetic, "synthetic")
    _check_integer("bins", bins, 2)
    cols = _resolve_columns(real, synthetic, columns, stacklevel=4)
    return [_encode_column(real[c], synthetic[c], c, int(bins)) for c in cols]


def _tvd_table(encoded: Sequence[_Encoded], way: int) -> pd.DataFrame:
    """One row per 1- or 2-way marginal with its TVD and whether it is all-categorical."""
    if way == 1:
        rows = [((e.name,), _tvd_from_codes(e.real, e.synthetic, e.n_codes), not e.numeric)
                for e in encoded]
    else:
        rows = [((a.name, b.name), _pair_tvd(a, b), not (a.numeric or b.numeric))
                for a, b in itertools.combinations(encoded, 2)]
    return pd.DataFrame(
        {
            "columns": pd.Series([r[0] for r in rows], dtype=object),
            "tvd": np.array([r[1] for r in rows], dtype=np.float64),
            "categorical": np.array([r[2] for r in rows], dtype=bool),
        }
    )


def marginal_tvd(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    *,
    bins: int = 20,
    way: int = 1,
    columns: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Total variation distance of every 1-way or 2-way marginal, to see where fidelity is lost.

    Returns one row per marginal with ``columns`` (tuple of names), ``tvd`` in [0, 1] and
    ``categorical`` (True when no column of the marginal was binned as numeric).
    """
    if way not in (1, 2):
        raise ValueError(f"way must be 1 or 2, got {way!r}")
    return _tvd_table(_encode_all(real, synthetic, bins, columns), way)


def summarize_tvd(table: pd.DataFrame) -> dict[str, Any]:
    """Mean, median, max and worst marginal of a ``marginal_tvd`` table, for one-line reporting."""
    if not {"columns", "tvd"} <= set(table.columns):
        raise ValueError("table must come from marginal_tvd (needs 'columns' and 'tvd')")
    if len(table) == 0:
        nan = float("nan")
        return {"mean": nan, "median": nan, "max": nan, "worst": None, "n_marginals": 0}
    tvd = table["tvd"].to_numpy(dtype=np.float64)
    worst = int(np.argmax(tvd))
    return {
        "mean": float(tvd.mean()),
        "median": float(np.median(tvd)),
        "max": float(tvd[worst]),
        "worst": list(table["columns"].iloc[worst]),
        "n_marginals": int(tvd.size),
    }


def fidelity_report(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    bins: int = 20,
    *,
    columns: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Headline marginal-fidelity numbers (1-way, 2-way, categorical-pair 2-way TVD) in one dict."""
    encoded = _encode_all(real, synthetic, bins, columns)
    one = _tvd_table(encoded, 1)
    two = _tvd_table(encoded, 2)
    s1, s2 = summarize_tvd(one), summarize_tvd(two)
    s2cat = summarize_tvd(two[two["categorical"]])
    return {
        "tvd_1way_mean": s1["mean"],
        "tvd_1way_max": s1["max"],
        "tvd_1way_worst": s1["worst"],
        "tvd_2way_mean": s2["mean"],
        "tvd_2way_max": s2["max"],
        "tvd_2way_worst": s2["worst"],
        "tvd_2way_cat_mean": s2cat["mean"],
        "tvd_2way_cat_max": s2cat["max"],
        "tvd_2way_cat_worst": s2cat["worst"],
        "n_2way_cat_pairs": s2cat["n_marginals"],
        "numeric_columns": [e.name for e in encoded if e.numeric],
        "bins": int(bins),
        "n_real": len(real),
        "n_synthetic": len(synthetic),
    }


_FLOOR_MEASURES = ("tvd_1way_mean", "tvd_2way_mean", "tvd_2way_cat_mean")


def sampling_floor(
    real: pd.DataFrame,
    n: int | None = None,
    bins: int = 20,
    *,
    draws: int = 3,
    seed: int = 0,
    columns: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The marginal fidelity of ``n`` rows drawn from ``real`` itself with replacement (default: as
    many as it has): ``fidelity_report``'s TVDs, the mean over ``draws`` draws (and their
    population std, as ``*_std``).
    An ``n``-row sample of the real distribution lies this far from ``real`` by chance alone (Adult's
    32,561 training rows: about 0.005 / 0.013 / 0.011 for 1-way / 2-way / categorical pairs at 20
    bins), so a synthetic table's TVDs read best against it. A reference, not a bound: a sampler
    that balances its draws (``Synthesizer.sample`` rakes its rows towards the DP one-way
    marginals) can score below it."""
    _check_frame(real, "real")
    n = len(real) if n is None else n
    _check_integer("n", n, 1)
    _check_integer("draws", draws, 1)
    _check_integer("seed", seed, 0)
    if columns is not None:
        columns = list(columns)  # read by every draw: an iterator would be spent after the first
        real = real[_resolve_columns(real, real, columns)]
    rng = np.random.default_rng(seed)
    reports = [fidelity_report(real, real.iloc[rng.integers(0, len(real), int(n))].reset_index(drop=True), bins)
               for _ in range(int(draws))]
    floor: dict[str, Any] = {}
    for measure in _FLOOR_MEASURES:
        values = np.array([report[measure] for report in reports], dtype=np.float64)
        floor[measure] = float(values.mean())
        floor[f"{measure}_std"] = float(values.std())
    floor.update(n=int(n), draws=int(draws), bins=int(bins))
    return floor


# ------------------------------------------------------------------------ TSTR


def _prepare_features(
    train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str], notes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[str]]:
    """Turn features into float columns (numeric) or str object columns with nulls as a category."""
    cat_cols: list[str] = []
    num_cols: list[str] = []
    xtr: dict[str, np.ndarray] = {}
    xte: dict[str, np.ndarray] = {}
    for col in features:
        if _is_numeric_dtype(test[col].dtype):  # the real data defines the schema
            if not _is_numeric_dtype(train[col].dtype):
                notes.append(f"feature {col!r}: non-numeric training values coerced to numbers")
            values = _numeric_values(train[col], col, coerce=True)
            if np.isnan(values).all():  # nothing to learn from, and gradient boosting cannot bin it
                notes.append(f"feature {col!r} is null in every training row: left out")
                continue
            xtr[col] = values
            xte[col] = _numeric_values(test[col], col)
            num_cols.append(col)
        else:
            for store, frame in ((xtr, train), (xte, test)):
                store[col] = frame[col].astype(str).fillna(_MISSING).to_numpy(dtype=object)
            cat_cols.append(col)
    order = cat_cols + num_cols
    return (
        pd.DataFrame(xtr, index=train.index)[order],
        pd.DataFrame(xte, index=test.index)[order],
        cat_cols,
        num_cols,
    )


def _sorted_labels(values: pd.Index) -> list[Any]:
    """Class labels in a deterministic order (natural order, or by string if types are mixed)."""
    labels = [_py(v) for v in values]
    try:
        return sorted(labels)
    except TypeError:
        return sorted(labels, key=str)


def _build_model(name: str, cat_cols: list[str], num_cols: list[str], random_state: int) -> Any:
    """sklearn pipeline for one TSTR model, robust to nulls and categories unseen in training."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    if name == "hgb":
        pre = ColumnTransformer(
            [
                (
                    "cat",
                    OrdinalEncoder(
                        handle_unknown="use_encoded_value",
                        unknown_value=np.nan,  # unseen categories -> HGB's missing branch
                        max_categories=_HGB_MAX_CATEGORIES,
                        dtype=np.float64,
                    ),
                    cat_cols,
                ),
                ("num", "passthrough", num_cols),  # HGB handles NaN natively
            ]
        )
        mask = np.array([True] * len(cat_cols) + [False] * len(num_cols))
        clf = HistGradientBoostingClassifier(
            categorical_features=mask if mask.any() else None, random_state=random_state
        )
        return Pipeline([("pre", pre), ("clf", clf)])
    pre = ColumnTransformer(
        [
            ("cat", OneHotEncoder(handle_unknown="ignore"), cat_cols),
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                                 keep_empty_features=True)),
                        ("scale", StandardScaler()),
                    ]
                ),
                num_cols,
            ),
        ]
    )
    clf = LogisticRegression(max_iter=5000, random_state=random_state)
    return Pipeline([("pre", pre), ("clf", clf)])


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    """Binary AUC of the positive (second) test class, else macro one-vs-rest over test classes."""
    from sklearn.metrics import roc_auc_score

    present = np.unique(y)
    if present.size == 2:
        return float(roc_auc_score(y == present[1], proba[:, present[1]]))
    return float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))


def tstr(
    synthetic: pd.DataFrame,
    real_test: pd.DataFrame,
    target: str,
    *,
    models: Sequence[str] = ("hgb", "logreg"),
    random_state: int = 0,
) -> dict[str, Any]:
    """Train on synthetic, test on real: accuracy and ROC AUC per model, to measure ML utility.

    Returns ``{model: {"accuracy", "roc_auc", "fit_seconds", "notes"}}`` for each model plus
    ``target``, ``classes``, ``positive_class`` (binary only), ``n_train``, ``n_test``,
    ``majority_accuracy`` (of the test set) and ``notes``.
    """
    _check_frame(synthetic, "synthetic")
    _check_frame(real_test, "real_test")
    if isinstance(models, str):
        models = (models,)
    models = tuple(models)
    unknown = [m for m in models if m not in _SUPPORTED_MODELS]
    if not models or unknown:
        raise ValueError(f"models must be a non-empty subset of {_SUPPORTED_MODELS}, got {models}")
    for frame, name in ((synthetic, "synthetic"), (real_test, "real_test")):
        if target not in frame.columns:
            raise ValueError(f"target {target!r} is not a column of {name}")
    features = [c for c in real_test.columns if c != target]
    if not features:
        raise ValueError("real_test has no feature columns besides the target")
    missing = [c for c in features if c not in synthetic.columns]
    if missing:
        raise ValueError(f"feature columns missing from synthetic: {missing}")

    notes: list[str] = []
    train = synthetic[synthetic[target].notna()]
    test = real_test[real_test[target].notna()]
    for frame, original, name in ((train, synthetic, "synthetic"), (test, real_test, "real_test")):
        dropped = len(original) - len(frame)
        if dropped:
            notes.append(f"dropped {dropped} rows of {name} with a null target")
        if len(frame) == 0:
            raise ValueError(f"{name} has no rows with a non-null target {target!r}")

    values = test[target]
    if pd.api.types.is_float_dtype(values.dtype) and not np.all(np.mod(values.to_numpy(dtype=np.float64), 1.0) == 0.0):
        raise ValueError(f"target {target!r} holds fractional numbers in real_test: train-on-synthetic scores "
                         f"classifiers, so pick a label column (or bin this one into classes)")

    # Synthetic labels the real test set never shows (a catch-all, say) cannot be scored, and a class
    # with a single synthetic row breaks stratified early stopping: such training rows are dropped.
    train_labels = train[target].astype(object)
    counts = train_labels.map(train_labels.value_counts()).to_numpy(dtype=np.int64)
    keep = train_labels.isin(set(test[target].astype(object))).to_numpy() & (counts >= 2)
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} synthetic rows whose target class is absent from "
                     f"real_test or held by a single row")
        train = train[keep]
        if len(train) == 0:
            raise ValueError(f"synthetic has no rows with a target class that real_test shows ({target!r})")

    labels = _sorted_labels(pd.Index(pd.unique(pd.concat([train[target], test[target]]))))
    label_index = pd.Index(labels, dtype=object)
    y_train = label_index.get_indexer(train[target].astype(object))
    y_test = label_index.get_indexer(test[target].astype(object))
    x_train, x_test, cat_cols, num_cols = _prepare_features(train, test, features, notes)

    test_classes = np.unique(y_test)
    train_classes = np.unique(y_train)
    majority = int(np.bincount(y_test).argmax())
    result: dict[str, Any] = {
        "target": target,
        "classes": labels,
        "positive_class": labels[test_classes[1]] if test_classes.size == 2 else None,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "majority_accuracy": float(np.mean(y_test == majority)),
        "notes": notes,
    }
    if test_classes.size < 2:
        notes.append("real_test has a single target class: ROC AUC is undefined (nan)")
    unseen = [labels[c] for c in np.setdiff1d(test_classes, train_classes)]
    if unseen and train_classes.size > 1:
        notes.append(f"test classes absent from training data (scored 0): {unseen}")

    for name in models:
        model_notes: list[str] = []
        start = time.perf_counter()
        if train_classes.size < 2:
            only = train_classes[0]
            model_notes.append(
                f"training data has a single target class {labels[only]!r}: "
                "predicting it everywhere, ROC AUC is nan"
            )
            accuracy, auc = float(np.mean(y_test == only)), float("nan")
        else:
            from sklearn.exceptions import ConvergenceWarning

            model = _build_model(name, cat_cols, num_cols, random_state)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(x_train, y_train)
            if any(issubclass(w.category, ConvergenceWarning) for w in caught):
                model_notes.append("solver did not fully converge")
            proba = np.zeros((len(x_test), len(labels)))
            proba[:, model.classes_] = model.predict_proba(x_test)
            accuracy = float(np.mean(proba.argmax(axis=1) == y_test))
            auc = _roc_auc(y_test, proba) if test_classes.size >= 2 else float("nan")
        result[name] = {
            "accuracy": accuracy,
            "roc_auc": auc,
            "fit_seconds": time.perf_counter() - start,
            "notes": model_notes,
        }
    return result


def trtr(
    real_train: pd.DataFrame,
    real_test: pd.DataFrame,
    target: str,
    *,
    models: Sequence[str] = ("hgb", "logreg"),
    random_state: int = 0,
) -> dict[str, Any]:
    """Train on real, test on real: the ceiling that TSTR scores should be compared with."""
    return tstr(real_train, real_test, target, models=models, random_state=random_state)


# ------------------------------------------------------------- out of domain


def out_of_domain_fraction(real: pd.DataFrame, synthetic: pd.DataFrame) -> dict[str, Any]:
    """Share of synthetic values the real data never shows (unseen category, out-of-range, null).

    Returns ``columns`` (fraction per column), ``overall`` (fraction of all cells) and
    ``rows`` (fraction of synthetic rows with at least one out-of-domain value).
    """
    _check_frame(real, "real")
    _check_frame(synthetic, "synthetic")
    cols = _resolve_columns(real, synthetic, None)
    flags = np.zeros((len(synthetic), len(cols)), dtype=bool)
    for j, col in enumerate(cols):
        r, s = real[col], synthetic[col]
        s_null = s.isna().to_numpy()
        if _is_numeric_dtype(r.dtype):
            rv = _numeric_values(r, col)
            sv = _numeric_values(s, col, coerce=True)
            rv = rv[~np.isnan(rv)]
            not_number = np.isnan(sv) & ~s_null  # non-null values that are not numbers
            if rv.size:
                out = (sv < rv.min()) | (sv > rv.max()) | not_number
            else:
                out = ~s_null
        else:
            domain = r.dropna().unique()
            out = ~s.isin(domain).to_numpy() & ~s_null
        if not r.isna().any():
            out = out | s_null
        flags[:, j] = out
    per_column = flags.mean(axis=0)
    return {
        "columns": {c: float(v) for c, v in zip(cols, per_column)},
        "overall": float(flags.mean()),
        "rows": float(flags.any(axis=1).mean()),
        "n_synthetic": int(len(synthetic)),
    }


# ---------------------------------------------------------------- resources


def peak_rss_mb(*, include_children: bool = False) -> float:
    """Peak resident memory of this process in MiB, for per-run memory benchmarks.

    With ``include_children`` the peak of waited-for child processes is added (a sum of
    peaks, so an upper bound). Falls back to psutil where ``resource`` is unavailable.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        import psutil

        info = psutil.Process().memory_info()
        return float(getattr(info, "peak_wset", info.rss) / (1024 * 1024))
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        usage += resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1.0 / (1024 * 1024) if sys.platform == "darwin" else 1.0 / 1024
    return float(usage * scale)
