"""Does a reproduction agree with the study it reproduces? Every table cell and every verdict
of two figures folders of one profile, compared with the tolerance the reference's own seed
variation allows.

A reproduction on another machine is a new draw of the trained models: a CPU of another kind
rounds its kernels differently, training takes another path, and every number moves by about
as much as it moves from one seed to the next. So a number *agrees* when the two folders'
values differ by less than their seed variation allows, and not by a fixed epsilon. The
comparison reads only the CSV tables (:data:`TABLES` says how each one's rows are keyed) and,
cell by cell, judges each column by what it is (:func:`column_kind`):

``estimate``  a mean over seeds (an objective's score or accuracy, a difference of two
              objectives, the random floor). It agrees when the two values differ by less
              than ``t(0.975, nu) * sqrt(V_ref + V_rep)``, a Welch interval: ``V`` is a side's
              variance of that mean over seeds, ``sum_i c_i^2 s_i^2 / n_i`` over the objectives
              it combines (coefficients ``c_i``; ``s_i`` the std over seeds and ``n_i`` the seeds
              of objective ``i``, from the row itself or from the metrics table beside it; the
              objectives' models are trained independently), and ``nu`` the Welch-Satterthwaite
              degrees of freedom. A difference of two objectives with a model-level interval
              on both sides (at least three seeds) uses the intervals instead: it agrees within
              ``sqrt(h_ref^2 + h_rep^2)``, ``h`` each interval's half-width. Where a side has no
              spread (one seed, or a folder without the column) the other side's stands for
              both; where neither has one the value must be equal.
``scaled``    a standardised effect (t, d_z, pooled d): the tolerance of its row's difference,
              scaled by the ratio of the two (``d_z = diff / sd``).
``p``         a p-value: judged through the verdict it decides.
``verdict``   a verdict of the study: "SCL better (images)?", "SCL better (models)?", and the
              verdicts of every pair of objectives. A changed verdict is listed with both
              sides' effect and p (or interval), and marked *fragile* where either side is
              near its threshold (:func:`is_fragile`).
``spread``, ``count``, ``label``, ``derived``  standard deviations and interval bounds (they make the
              tolerances), counts, labels and orderings: shown where they differ, not judged.

Everything agrees when every estimate and scaled effect is within its tolerance, no verdict
changed and every table and row of the reference is in the reproduction. Bitwise-equal tables
are reported as identical.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np
import pandas as pd
from scipy import stats as sps

from .seed_level import LEVEL          # the tolerance's coverage: the model-level intervals'
from .stats import ALPHA               # the threshold of the study's tests
from .verdicts import Verdict

PathLike = Union[str, Path]
FRAGILE_P = 5.0          # an image-level verdict is fragile when its Holm p is within this factor of ALPHA
FRAGILE_CI = 0.25        # a model-level one when its interval's end nearer to 0 is this share of its half-width
REPORT = "reproduction"  # the comparison's own files: reproduction.md and reproduction.csv


@dataclass(frozen=True)
class TableSpec:
    """How a table's rows are keyed, and where the seed spreads of its estimates are."""
    keys: tuple[str, ...]
    spreads: Optional[str] = None     # the per-objective table holding <objective>_std and _n_seeds


_TESTS = ("dataset", "method", "metric", "objective_a", "objective_b", "seed")
TABLES: dict[str, TableSpec] = {                    # in the order the report lists them
    "table_claim_robustness": TableSpec(("dataset", "method", "metric", "protocol"), "table_attribution_metrics"),
    "table_accuracy": TableSpec(("dataset", "quantity")),
    "table_attribution_metrics": TableSpec(("dataset", "method", "metric")),
    "table_significance": TableSpec(_TESTS, "table_attribution_metrics"),
    "paper_vs_reproduced": TableSpec(("paper_dataset", "reproduced_dataset", "method", "metric"),
                                     "table_attribution_metrics"),
    "table_pair_metrics": TableSpec(("dataset", "method", "metric")),
    "table_pair_significance": TableSpec(_TESTS, "table_pair_metrics"),
}

# What each column of the study's tables holds (the module docstring says how each kind is
# judged): exact names, then the per-objective patterns; anything else is an estimate.
VERDICT_LEVEL = {"holds": "images", "verdict": "images", "model_holds": "models", "model_verdict": "models"}
COLUMN_KINDS: dict[str, str] = {
    **{c: "verdict" for c in VERDICT_LEVEL},
    **{c: "p" for c in ("p", "p_holm")},
    **{c: "scaled" for c in ("t", "d_z", "d_pooled")},
    **{c: "spread" for c in ("model_ci_low", "model_ci_high")},
    **{c: "count" for c in ("n_pairs", "n_obs", "n_seeds", "seeds_favouring", "seeds_a_better", "seeds_b_better")},
    **{c: "derived" for c in ("order", "best", "reproduced_order", "ordering_agrees", "pairs_agreeing",
                              "significant", "better", "direction")},
    **{c: "label" for c in ("profile", "stand_in", "note", "facet", "kind", "mode", "seed_handling",
                            "direction_of_better", "quantity")},
}
COLUMN_PATTERNS: tuple[tuple[str, str], ...] = (     # (prefix or suffix with its "_", kind)
    ("*_std", "spread"), ("*_n_seeds", "count"), ("paper_*", "label"))
EFFECTS = ("diff", "mean_diff", "model_diff")       # a difference of two objectives
NO_VERDICT = (Verdict.TOO_FEW_SEEDS,)               # not a verdict: nothing was decided
OUTSIDE = ("outside", "no tolerance")               # the statuses of a number that does not agree


def column_kind(column: str, keys: Iterable[str] = ()) -> str:
    """What a column holds: key, verdict, p, scaled, spread, count, derived, label or estimate."""
    if column in keys:
        return "key"
    if column in COLUMN_KINDS:
        return COLUMN_KINDS[column]
    for pattern, kind in COLUMN_PATTERNS:
        if column.endswith(pattern[1:]) if pattern.startswith("*") else column.startswith(pattern[:-1]):
            return kind
    return "estimate"


def is_fragile(row: pd.Series, level: str) -> bool:
    """Near its threshold: an image-level verdict whose Holm p is within a factor of
    :data:`FRAGILE_P` of :data:`ALPHA`; a model-level one whose interval's end nearer to 0 is
    within :data:`FRAGILE_CI` of its half-width from 0 (a small move of the interval would
    make it cross 0, or stop crossing it)."""
    if level == "images":
        p = as_float(row.get("p_holm"))
        return bool(np.isfinite(p) and ALPHA / FRAGILE_P <= p <= ALPHA * FRAGILE_P)
    low, high = as_float(row.get("model_ci_low")), as_float(row.get("model_ci_high"))
    if not (np.isfinite(low) and np.isfinite(high)):
        return False
    return bool(min(abs(low), abs(high)) <= FRAGILE_CI * (high - low) / 2)


# ----------------------------------------------------------------------------- folders

class ReproductionInputError(ValueError):
    """Folders that cannot be compared (missing, of two profiles, without tables)."""


@dataclass
class Folder:
    """A figures folder as the comparison reads it: its CSV tables, profile and coverage."""
    path: Path
    tables: dict[str, Path]
    coverage: dict

    @property
    def profile(self) -> Optional[str]:
        if self.coverage.get("profile"):
            return str(self.coverage["profile"])
        if "paper_vs_reproduced" in self.tables:
            values = pd.read_csv(self.tables["paper_vs_reproduced"]).get("profile")
            if values is not None and len(values):
                return str(values.iloc[0])
        return None

    def read(self, name: str) -> Optional[pd.DataFrame]:
        return pd.read_csv(self.tables[name]) if name in self.tables else None


def read_folder(path: PathLike) -> Folder:
    """The tables (every ``*.csv`` but the comparison's own report) and ``coverage.json`` of a
    figures folder; :class:`ReproductionInputError` when it is missing or has no table."""
    path = Path(path)
    if not path.is_dir():
        raise ReproductionInputError(f"{path} is not a folder")
    order = {name: i for i, name in enumerate(TABLES)}
    found = sorted((p for p in path.glob("*.csv") if p.stem != REPORT),
                   key=lambda p: (order.get(p.stem, len(order)), p.stem))
    tables = {p.stem: p for p in found}
    if not tables:
        raise ReproductionInputError(f"{path} holds no table (*.csv): give a figures folder such as figures/quick")
    try:
        coverage = json.loads((path / "coverage.json").read_text())
    except (OSError, ValueError):
        coverage = {}
    return Folder(path, tables, coverage if isinstance(coverage, dict) else {})


# ----------------------------------------------------------------------------- the comparison

@dataclass
class Comparison:
    """The outcome: one row per compared cell (``cells``), the tables and rows on one side only."""
    reference: Folder
    reproduced: Folder
    cells: pd.DataFrame
    identical: list[str] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)
    only_reproduced: list[str] = field(default_factory=list)
    rows_missing: dict[str, list[str]] = field(default_factory=dict)   # reference rows absent from the reproduction
    rows_added: dict[str, list[str]] = field(default_factory=dict)
    identical_counts: tuple[int, int] = (0, 0)    # numbers and verdicts of the identical tables

    def _count(self, mask: pd.Series) -> int:
        return int(mask.sum()) if len(self.cells) else 0

    @property
    def numbers(self) -> int:
        """Numeric cells compared (every kind; identical tables included)."""
        return self._count(self.cells["numeric"]) + self.identical_counts[0]

    @property
    def outside(self) -> int:
        return self._count(self.cells["status"].isin(OUTSIDE))

    @property
    def without_tolerance(self) -> int:
        return self._count(self.cells["status"] == "no tolerance")

    @property
    def verdicts(self) -> int:
        return self._count(self.cells["kind"] == "verdict") + self.identical_counts[1]

    @property
    def changed(self) -> pd.DataFrame:
        return self.cells[self.cells["status"] == "changed"] if len(self.cells) else self.cells

    @property
    def agrees(self) -> bool:
        return (self.outside == 0 and self.changed.empty and not self.only_reference
                and not any(self.rows_missing.values()))

    @property
    def is_identical(self) -> bool:
        return (not self.only_reference and not self.only_reproduced
                and set(self.identical) == set(self.reference.tables))

    def summary(self) -> str:
        """The one line: numbers compared and outside, verdicts compared and changed."""
        profile = self.reference.profile or self.reproduced.profile or "?"
        if self.is_identical:
            return (f"reproduction of '{profile}': identical ({len(self.identical)} tables, {self.numbers:,} numbers, "
                    f"{self.verdicts:,} verdicts bitwise equal)")
        fragile = int(self.changed["fragile"].astype(bool).sum()) if len(self.changed) else 0
        no_tol = f" ({self.without_tolerance:,} without a seed spread to judge by)" if self.without_tolerance else ""
        text = (f"reproduction of '{profile}': {self.numbers:,} numbers compared, {self.outside:,} outside their "
                f"tolerance{no_tol}; {self.verdicts:,} verdicts compared, {len(self.changed):,} changed "
                f"({fragile:,} of them fragile)")
        missing = len(self.only_reference) + sum(len(v) for v in self.rows_missing.values())
        if missing:
            text += f"; {missing:,} tables or rows of the reference not reproduced"
        return text + (": agrees" if self.agrees else "")


def compare_folders(reference: PathLike, reproduced: PathLike) -> Comparison:
    """Compare every table of two figures folders of one profile (see the module docstring).
    :class:`ReproductionInputError` for folders that cannot be compared."""
    ref, rep = read_folder(reference), read_folder(reproduced)
    if ref.profile and rep.profile and ref.profile != rep.profile:
        raise ReproductionInputError(f"{ref.path} is of profile '{ref.profile}' and {rep.path} of '{rep.profile}': "
                                     f"compare two figures folders of one profile")
    out = Comparison(ref, rep, pd.DataFrame(columns=CELL_COLUMNS))
    out.only_reference = [n for n in ref.tables if n not in rep.tables]
    out.only_reproduced = [n for n in rep.tables if n not in ref.tables]
    frames = []
    for name in [n for n in ref.tables if n in rep.tables]:
        if ref.tables[name].read_bytes() == rep.tables[name].read_bytes():
            out.identical.append(name)
            continue
        cells, missing, added = compare_table(name, ref, rep)
        frames.append(cells)
        out.rows_missing[name], out.rows_added[name] = missing, added
    frames = [f for f in frames if len(f)]
    if frames:
        out.cells = pd.concat(frames, ignore_index=True)
    counts = [_table_counts(name, ref.read(name)) for name in out.identical]
    out.identical_counts = (sum(n for n, _ in counts), sum(v for _, v in counts))
    return out


def _numeric_columns(df: pd.DataFrame) -> set[str]:
    """Columns of numbers (True/False columns are not)."""
    return {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}


def _table_counts(name: str, df: pd.DataFrame) -> tuple[int, int]:
    """(numbers, verdicts) of a table, as :func:`compare_table` counts them."""
    keys = _keys(name, df)
    numbers = sum(len(df) for c in _numeric_columns(df) if column_kind(c, keys) != "key")
    verdicts = sum(int(df[c].map(_is_verdict).sum()) for c in df.columns if column_kind(c, keys) == "verdict")
    return numbers, verdicts


CELL_COLUMNS = ["table", "row", "column", "kind", "numeric", "reference", "reproduced", "difference", "tolerance",
                "status", "level", "fragile", "detail"]


def _keys(name: str, df: pd.DataFrame) -> tuple[str, ...]:
    spec = TABLES.get(name)
    if spec is not None:
        return tuple(k for k in spec.keys if k in df.columns)
    return tuple(c for c in df.columns if df[c].dtype == object and column_kind(c) in ("estimate", "label"))


def _row_keys(df: pd.DataFrame, keys: tuple[str, ...]) -> list[str]:
    """One string per row ("fashion_mnist/gradcam/pixel_flipping"); a repeated key gets its
    occurrence number."""
    base = ["/".join("" if pd.isna(v) else str(v) for v in vals) for vals in
            (df[list(keys)].itertuples(index=False, name=None) if keys else [(i,) for i in range(len(df))])]
    seen: dict[str, int] = {}
    out = []
    for k in base:
        seen[k] = seen.get(k, 0) + 1
        out.append(k if seen[k] == 1 else f"{k} #{seen[k]}")
    return out


def compare_table(name: str, ref: Folder, rep: Folder) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The cells of one table present in both folders; the reference's rows missing from the
    reproduction, and the reproduction's rows the reference lacks."""
    a, b = ref.read(name), rep.read(name)
    keys = _keys(name, a)
    a.index, b.index = _row_keys(a, keys), _row_keys(b, keys)
    missing = [k for k in a.index if k not in b.index]
    added = [k for k in b.index if k not in a.index]
    common = [k for k in a.index if k in b.index]
    spec = TABLES.get(name)
    spreads = (_Spreads(ref.read(spec.spreads)), _Spreads(rep.read(spec.spreads))) if spec and spec.spreads \
        else (_Spreads(None), _Spreads(None))
    accuracy = tuple(_Spreads(f.read("table_accuracy"), accuracy=True) for f in (ref, rep))
    kinds = {c: column_kind(c, keys) for c in a.columns if c in b.columns}
    kinds = {c: kind for c, kind in kinds.items() if kind != "key"}
    columns = sorted(kinds, key=lambda c: kinds[c] == "scaled")          # a scaled effect after its difference
    numeric_columns = _numeric_columns(a) & _numeric_columns(b)
    rows = []
    for key in common:
        ra, rb = a.loc[key], b.loc[key]
        tolerance: dict[str, float] = {}
        for c in columns:
            kind = kinds[c]
            va, vb = ra[c], rb[c]
            numeric = c in numeric_columns
            cell = {"table": name, "row": key, "column": c, "kind": kind, "numeric": numeric, "reference": va,
                    "reproduced": vb, "difference": np.nan, "tolerance": np.nan, "status": "equal", "level": "",
                    "fragile": False, "detail": ""}
            if numeric:
                fa, fb = float(va), float(vb)
                same = fa == fb or (math.isnan(fa) and math.isnan(fb))
                cell["difference"] = fb - fa if np.isfinite(fa) and np.isfinite(fb) else np.nan
                if kind == "estimate":
                    tol = _tolerance(name, c, ra, rb, spreads, accuracy)
                    tolerance[c] = tol
                elif kind == "scaled":
                    tol = _scaled_tolerance(c, (ra, rb), tolerance)
                else:
                    tol = np.nan
                cell["tolerance"] = tol
                if not same:
                    cell["status"] = _judge(kind, fa, fb, tol)
            elif kind == "verdict":
                cell["level"] = VERDICT_LEVEL[c]
                if _text(va) != _text(vb):
                    cell["status"] = "changed"
                    cell["fragile"] = is_fragile(ra, cell["level"]) or is_fragile(rb, cell["level"])
                    cell["detail"] = f"{_verdict_text(ra, c)} -> {_verdict_text(rb, c)}"
                elif not (_is_verdict(va) or _is_verdict(vb)):
                    continue                         # "too few seeds" on both sides: nothing decided
            elif _text(va) != _text(vb):
                cell["status"] = "shown"
            rows.append(cell)
    return pd.DataFrame(rows, columns=CELL_COLUMNS), missing, added


def _judge(kind: str, a: float, b: float, tol: float) -> str:
    if kind in ("estimate", "scaled"):
        if not np.isfinite(tol):
            return "no tolerance"
        if not (np.isfinite(a) and np.isfinite(b)):
            return "outside"                    # a number on one side, none on the other
        return "within" if abs(b - a) <= tol else "outside"
    return "through verdict" if kind == "p" else "shown"


# ----------------------------------------------------------------------------- tolerances

class _Spreads:
    """Per-objective seed spreads (std over seeds, number of seeds) of a per-objective table,
    looked up by (dataset, method, metric) or, for the accuracy table, (dataset, quantity)."""

    def __init__(self, df: Optional[pd.DataFrame], accuracy: bool = False):
        self.rows: dict[tuple, pd.Series] = {}
        if df is None:
            return
        for _, r in df.iterrows():
            key = (r.get("dataset"), "model", r.get("quantity")) if accuracy else \
                  (r.get("dataset"), _text(r.get("method")), r.get("metric"))
            self.rows[key] = r

    def get(self, dataset, method, metric, objective: str) -> tuple[float, float]:
        r = self.rows.get((dataset, _text(method), metric))
        if r is None:
            return np.nan, np.nan
        return as_float(r.get(f"{objective}_std")), as_float(r.get(f"{objective}_n_seeds"))


def _components(table: str, column: str, row: pd.Series) -> Optional[list[tuple[str, str, float]]]:
    """The objectives an estimate combines: [(method, objective, coefficient)]; ``method`` ""
    for the row's own method (None: no rule for this column)."""
    if column.endswith("_mean"):
        return [("", column[:-len("_mean")], 1.0)]
    a, b = row.get("objective_a"), row.get("objective_b")
    if table == "table_claim_robustness":
        a, b = "scl", "ce"                       # the claim: SCL against CE (claim.CHALLENGER, REFERENCE)
    if column in ("mean_a", "mean_b") and isinstance(a, str):
        return [("", a if column == "mean_a" else b, 1.0)]
    if column.startswith("mean_") and column not in ("mean_diff",):
        return [("", column[len("mean_"):], 1.0)]
    if column in EFFECTS and isinstance(a, str) and isinstance(b, str):
        return [("", a, 1.0), ("", b, -1.0)]
    if column == "random":
        return [("random", a, 0.5), ("random", b, 0.5)]
    if column == "real_minus_random":
        return [("", a, 0.5), ("", b, 0.5), ("random", a, -0.5), ("random", b, -0.5)]
    for prefix in ("reproduced_", "diff_"):
        if column.startswith(prefix):
            return [("", column[len(prefix):], 1.0)]
    return None


def _side_variance(table: str, column: str, row: pd.Series, spreads: _Spreads,
                   accuracy: _Spreads) -> tuple[float, float]:
    """(variance over seeds of the estimate, its degrees of freedom) on one side; NaN when
    the side has no spread for it."""
    parts = _components(table, column, row)
    if not parts:
        return np.nan, np.nan
    dataset = row.get("dataset", row.get("reproduced_dataset"))
    var, dof = 0.0, np.inf
    for method, objective, coef in parts:
        if column.endswith("_mean"):
            s, n = as_float(row.get(f"{objective}_std")), as_float(row.get(f"{objective}_n_seeds"))
        elif table == "paper_vs_reproduced" and row.get("metric") == "test_accuracy":
            s, n = accuracy.get(dataset, "model", "test_accuracy", objective)
        else:
            s, n = spreads.get(dataset, method or row.get("method"), row.get("metric"), objective)
        if not (np.isfinite(s) and np.isfinite(n) and n >= 2):
            return np.nan, np.nan
        var += coef ** 2 * s ** 2 / n
        dof = min(dof, n - 1)
    return var, dof


def _tolerance(table: str, column: str, ra: pd.Series, rb: pd.Series, spreads: tuple[_Spreads, _Spreads],
               accuracy: tuple[_Spreads, _Spreads]) -> float:
    """The 95 % tolerance of an estimate's difference between the two sides (module docstring)."""
    if column in EFFECTS:
        ha, hb = _half_width(ra), _half_width(rb)
        if np.isfinite(ha) and np.isfinite(hb):
            return float(np.hypot(ha, hb))
    va, da = _side_variance(table, column, ra, spreads[0], accuracy[0])
    vb, db = _side_variance(table, column, rb, spreads[1], accuracy[1])
    if not np.isfinite(va) and not np.isfinite(vb):
        return np.nan
    if not np.isfinite(va):
        va, da = vb, db
    if not np.isfinite(vb):
        vb, db = va, da
    return welch_tolerance(va, da, vb, db)


def welch_tolerance(var_a: float, dof_a: float, var_b: float, dof_b: float, level: float = LEVEL) -> float:
    """Half-width of the ``level`` interval of the difference of two independent means whose
    variances are ``var_a`` and ``var_b`` (each with its degrees of freedom): Student's t at
    the Welch-Satterthwaite degrees of freedom times ``sqrt(var_a + var_b)``; 0 when both
    variances are 0."""
    total = var_a + var_b
    if total <= 0:
        return 0.0
    nu = total ** 2 / (var_a ** 2 / dof_a + var_b ** 2 / dof_b)
    return float(sps.t.ppf(0.5 + level / 2, nu) * math.sqrt(total))


def _half_width(row: pd.Series) -> float:
    low, high = as_float(row.get("model_ci_low")), as_float(row.get("model_ci_high"))
    return (high - low) / 2 if np.isfinite(low) and np.isfinite(high) else np.nan


def _scaled_tolerance(column: str, rows: tuple[pd.Series, pd.Series], tolerance: dict[str, float]) -> float:
    """A standardised effect moves with its row's difference: the difference's tolerance
    times |effect / difference| (the reference's ratio; the reproduction's where the
    reference's difference is 0)."""
    for effect in ("diff", "mean_diff"):
        if effect in tolerance:
            for row in rows:
                d, s = as_float(row.get(effect)), as_float(row.get(column))
                if np.isfinite(d) and d != 0 and np.isfinite(s):
                    return float(tolerance[effect] * abs(s / d))
    return np.nan


# ----------------------------------------------------------------------------- small helpers

def as_float(v) -> float:
    """A cell as a float (NaN for text and blanks)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _is_verdict(v) -> bool:
    return _text(v) not in ("", *NO_VERDICT)


def fmt_value(x: float, digits: int = 3) -> str:
    """``digits`` decimals, or significant digits for very small and very large values."""
    if not np.isfinite(x):
        return "–"
    return f"{x:.{digits}g}" if (abs(x) >= 1e4 or (0 < abs(x) < 1e-3)) else f"{x:.{digits}f}"


def _verdict_text(row: pd.Series, column: str) -> str:
    """A verdict with what decided it: the effect and Holm p (images), or the model-level
    difference and interval (models)."""
    verdict = _text(row.get(column)) or "–"
    if VERDICT_LEVEL[column] == "images":
        effect = as_float(row.get("diff", row.get("mean_diff")))
        p = as_float(row.get("p_holm"))
        return f"{verdict} ({fmt_value(effect)}, d_z {fmt_value(as_float(row.get('d_z')), 2)}, p = {p:.2g})"
    return (f"{verdict} ({fmt_value(as_float(row.get('model_diff')))} [{fmt_value(as_float(row.get('model_ci_low')))}, "
            f"{fmt_value(as_float(row.get('model_ci_high')))}])")
