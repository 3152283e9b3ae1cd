"""The pair analysis in a study's report: one table and one figure, from saved results only.

* :func:`table_pair_metrics` — pair method x pair metric x pair kind x dataset, one column per
  objective: mean +- std over seeds of the per-seed means over the pairs whose two images
  the model classifies correctly; first the similarity s itself per kind (no direction).
* :func:`fig_pair_grid` — example pairs (one per kind), then each objective's two maps per
  pair method, with the similarity of the pair under each objective.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import MissingInputError
from ..ops.pairs.metrics import PAIR_METRICS
from ..ops.pairs.sets import PAIR_KINDS
from ..ops.pairs.spaces import SPACES
from ..settings import layout as runs
from ..stages.pairs import load_pairs, pair_images
from . import saved, stats
from .names import (dataset_label, method_label, metric_direction, objective_color, objective_label, order_objectives,
                    ordered_methods, ordered_objectives)
from .plotting import image_grid, overlay_rgb
from .run_figures import load_eval_dataset
from .study_figures import reference_runs
from .tables import ARROW, Table, objective_cells, wide


# how the variant of a row is named in the table
MODES = {"": "", "conditional": ", one image at a time", "normalised": ", divided by s"}


def pair_methods_of(run_dir: Path) -> list[str]:
    """Pair methods with stored maps in a run (registry order)."""
    folder = Path(run_dir) / runs.PAIRS
    return ordered_methods(p.stem for p in folder.glob("*.npz") if not p.stem.startswith("curves_"))


def is_pair_row(results: pd.DataFrame) -> pd.Series:
    """True for the rows of the pair analysis (a non-empty pair id)."""
    if "pair" not in results:
        return pd.Series(False, index=results.index)
    return results["pair"].fillna("").astype(str).ne("")


def _similarity_rows(run_dirs: Sequence[Path]) -> pd.DataFrame:
    """Per run, method-independent: the mean similarity s per pair kind over the pairs with
    both images classified correctly (from the first pair method's file)."""
    rows = []
    for rd in map(Path, run_dirs):
        methods = pair_methods_of(rd)
        if not methods:
            continue
        z = load_pairs(runs.pairs_path(rd, methods[0]))
        key = saved.run_key(rd)
        ok = (z["labels1"] == z["preds1"]) & (z["labels2"] == z["preds2"])
        for kind in dict.fromkeys(z["kind"].astype(str)):
            sel = ok & (z["kind"].astype(str) == kind)
            rows.append({"dataset": key.dataset, "objective": key.objective, "seed": key.seed, "method": "", "metric": str(runs.RowName("similarity", (kind,))),
                         "mean": float(np.mean(z["similarity"][sel])) if sel.any() else np.nan})
    return pd.DataFrame(rows)


def table_pair_metrics(results: pd.DataFrame, run_dirs: Sequence[Path] = (), decimals: int = 3):
    """The pair metrics of a study as a :class:`~xai_utils.analysis.tables.Table`."""
    pairs = results[is_pair_row(results)]
    if pairs.empty:
        raise MissingInputError("no pair metric in results.csv (the profile lists no pair_methods/pair_metrics)")
    summ = stats.summarize(pairs)
    sim = _similarity_rows(run_dirs)
    if not sim.empty:
        summ = pd.concat([stats.across_seeds(sim, keys=("dataset", "method", "metric", "objective")), summ],
                         ignore_index=True)
    objs = order_objectives(summ["objective"].unique())
    data = wide(summ, ["dataset", "method", "metric"], objs)
    kinds = list(PAIR_KINDS)
    methods = {m: i for i, m in enumerate([""] + ordered_methods(m for m in data["method"] if m))}
    order = {m: i for i, m in enumerate(["similarity", *PAIR_METRICS])}
    km = data["metric"].map(lambda m: runs.RowName.parse(m).kind_and_variant)
    data = data.assign(kind=[k for k, _ in km], mode=[m for _, m in km],
                       _a=data["method"].map(methods), _b=data["metric"].map(lambda m: order.get(runs.RowName.parse(m).metric, 99)),
                       _c=[kinds.index(k) if k in kinds else 99 for k, _ in km]) \
               .sort_values(["dataset", "_a", "_b", "mode", "_c"]).drop(columns=["_a", "_b", "_c"]) \
               .reset_index(drop=True)
    direction = lambda m: None if m.startswith("similarity") else metric_direction(m)  # noqa: E731
    disp = pd.DataFrame({
        "Dataset": data["dataset"].map(dataset_label),
        "Method": [method_label(m) if m else "(any)" for m in data["method"]],
        "Metric": [("Similarity s" if m.startswith("similarity") else
                    f"{PAIR_METRICS[runs.RowName.parse(m).metric].label}{MODES.get(mo, ', ' + mo if mo else '')} "
                    f"{ARROW.get(direction(m), '')}").strip() for m, mo in zip(data["metric"], data["mode"])],
        "Pairs": data["kind"]})
    bold = pd.DataFrame(False, index=data.index, columns=list(disp.columns) + [objective_label(o) for o in objs])
    objective_cells(data, disp, bold, objs, lambda r: direction(r["metric"]), decimals)
    n = int(summ["n_seeds"].max())
    return Table("table_pair_metrics", data, disp, bold,
                 caption=f"Pair analysis: explanations of the similarity s of two images (cosine of the pooled "
                         f"features unless the run says otherwise). Mean ± std over seeds (n = {n}) of the per-seed "
                         f"means over the pairs whose two images the model classifies correctly. Pairs: view = two "
                         f"views of one image, same = two images of one class, different = two classes. Deletion/"
                         f"insertion perturb both images at once, or one image at a time (mean of both ways); 'divided by s': "
                         f"the AUC over the pair's own similarity, free of its level. "
                         f"↓ lower is better, ↑ higher is better; best per row in bold.")


def _uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def fig_pair_grid(run_dirs: Sequence[Path], per_kind: int = 1):
    """Rows: example pairs (``per_kind`` of each kind, both images right for every reference
    model where possible) x pair methods; columns: the two images, then each objective's
    map of image 1 and of image 2 (seed of lowest number per objective)."""
    refs = reference_runs([Path(r) for r in run_dirs], lambda rd: bool(pair_methods_of(rd)))
    if not refs:
        raise MissingInputError("no pairs/<method>.npz in any run")
    dataset = sorted({d for d, _ in refs})[0]
    objectives = ordered_objectives(o for d, o in refs if d == dataset)
    methods = ordered_methods({m for (d, _), rd in refs.items() if d == dataset for m in pair_methods_of(rd)})
    loaded = {(o, m): load_pairs(runs.pairs_path(refs[(dataset, o)], m)) for o in objectives
              for m in methods if runs.pairs_path(refs[(dataset, o)], m).is_file()}
    z0 = next(iter(loaded.values()))
    ok = np.ones(len(z0["index1"]), dtype=bool)
    for z in loaded.values():
        ok &= (z["labels1"] == z["preds1"]) & (z["labels2"] == z["preds2"])
    chosen = []
    for kind in PAIR_KINDS:
        of_kind = np.flatnonzero(z0["kind"].astype(str) == kind)
        ranked = sorted(of_kind, key=lambda i: (not ok[i], i))
        chosen += ranked[:per_kind]
    ds = load_eval_dataset(refs[(dataset, objectives[0])])
    names = list(getattr(ds, "class_names", None) or []) if ds is not None else []
    if ds is not None:
        x1, x2 = pair_images(ds, z0["index1"][chosen], z0["index2"][chosen], z0["kind"][chosen],
                             int(z0["options"].get("pair_seed", 0)), "cpu")
        x1, x2 = x1.numpy(), x2.numpy()
    cells, labels = [], []
    name = lambda c: names[int(c)] if int(c) < len(names) else str(int(c))  # noqa: E731
    for r, i in enumerate(chosen):
        for m in methods:
            row = [overlay_rgb(_uint8(x1[r]), None), overlay_rgb(_uint8(x2[r]), None)] \
                if ds is not None else [None, None]
            sims = []
            for o in objectives:
                z = loaded.get((o, m))
                if z is None:
                    row += [None, None]
                    continue
                row += [overlay_rgb(None, z["maps1"][i]), overlay_rgb(None, z["maps2"][i])]
                sims.append(f"{objective_label(o)} {float(z['similarity'][i]):.2f}")
            labels.append(f"{z0['kind'][i]}: #{z0['index1'][i]} {name(z0['labels1'][i])} / #{z0['index2'][i]} "
                          f"{name(z0['labels2'][i])}\n{method_label(m)}\ns: {', '.join(sims)}")
            cells.append(row)
    titles = ["image 1", "image 2"] + [f"{objective_label(o)}\nmap {k}" for o in objectives for k in (1, 2)]
    colors = ["black", "black"] + [objective_color(o) for o in objectives for _ in (1, 2)]
    seeds = sorted({saved.run_key(refs[(dataset, o)]).seed for o in objectives})
    space = str(z0["options"].get("space", "cosine"))
    return image_grid(cells, labels, titles, colors, title=(
        f"Pair explanations ({dataset_label(dataset)}, seed {', '.join(map(str, seeds))} of each objective): "
        f"each map explains the similarity s of the two images\n({SPACES[space].description}) and depends on "
        f"the other image; 'view' = the second image is an augmented view of the first"))
