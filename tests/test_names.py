"""The closed sets a study names (stages, verdicts) and the names of results.csv rows: written
in files as the plain words the files have always held, named in code by one enumeration."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from xai_utils import pipeline
from xai_utils.analysis.names import metric_sort_key, ordered_metrics
from xai_utils.analysis.seed_level import model_verdict
from xai_utils.analysis.verdicts import Verdict, significance_verdict
from xai_utils.pipeline.notebooks import NOTEBOOKS
from xai_utils.settings import STAGE_KEYS, STAGE_ORDER
from xai_utils.settings.layout import RUN_STAGES, RowName, Stage, stage_marker
from xai_utils.stages.fingerprint import record_fingerprint


def test_every_list_of_stages_is_the_enumeration():
    words = ["train", "attribute", "evaluate", "figures"]
    assert [str(s) for s in Stage] == words
    assert list(STAGE_ORDER) == list(pipeline.STAGES) == words
    assert set(NOTEBOOKS) == set(STAGE_KEYS) == set(words)
    assert list(RUN_STAGES) == words[:3]


def test_a_stage_is_written_as_its_word(tmp_path):
    assert stage_marker(tmp_path, Stage.EVALUATE) == tmp_path / "stages" / "evaluate.json"
    assert f"{Stage.TRAIN}:{Stage.FIGURES:>8}" == "train: figures"
    assert json.dumps({Stage.ATTRIBUTE: Stage.TRAIN}) == '{"attribute": "train"}'
    record_fingerprint(tmp_path, Stage.TRAIN)
    record_fingerprint(tmp_path, "train")                  # a plain word names the same entry
    assert list(json.loads((tmp_path / "fingerprint.json").read_text())) == ["train"]


def test_the_command_line_takes_stage_words_and_refuses_others():
    run = [sys.executable, "-m", "xai_utils.pipeline", "--profile", "smoke", "--dry-run", "--executor", "inline"]
    ok = subprocess.run(run + ["--stage", "train"], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and ":train" in ok.stdout and ":evaluate" not in ok.stdout
    bad = subprocess.run(run + ["--stage", "explain"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--stage" in bad.stderr


def test_verdicts_are_the_words_of_the_claim_tables():
    """A table writes a verdict naming the reference's label, and reads it back."""
    words = [v.words("CE") for v in Verdict]
    assert words == ["yes", "no (n.s.)", "no (CE better)", "too few seeds"]
    assert Verdict.REFERENCE_BETTER.words("baseline") == "no (baseline better)"
    buffer = io.StringIO()
    pd.DataFrame({"holds": words}).to_csv(buffer, index=False)
    assert buffer.getvalue().splitlines() == ["holds", "yes", "no (n.s.)", "no (CE better)", "too few seeds"]
    read_back = pd.read_csv(io.StringIO(buffer.getvalue()))["holds"]
    assert (read_back == Verdict.YES).tolist() == [True, False, False, False]
    assert [Verdict.read(w) for w in read_back] == list(Verdict)
    assert Verdict.read("no (baseline better)") is Verdict.REFERENCE_BETTER
    with pytest.raises(ValueError, match="not a verdict"):
        Verdict.read("maybe")
    assert Verdict.REFERENCE_BETTER.label("SCL", "CE") == "CE better than SCL"
    assert [v for v in Verdict if not v.decided] == [Verdict.TOO_FEW_SEEDS]


@pytest.mark.parametrize("low, high, seeds, direction, expected", [
    (-2.0, -1.0, 5, "lower", Verdict.YES), (1.0, 2.0, 5, "lower", Verdict.REFERENCE_BETTER),
    (1.0, 2.0, 5, "higher", Verdict.YES), (-1.0, 2.0, 5, "higher", Verdict.NOT_SIGNIFICANT),
    (-2.0, -1.0, 2, "lower", Verdict.TOO_FEW_SEEDS), (float("nan"), 1.0, 5, "lower", Verdict.TOO_FEW_SEEDS)])
def test_model_verdicts(low, high, seeds, direction, expected):
    assert model_verdict(low, high, seeds, direction) is expected


def test_image_level_verdicts():
    assert significance_verdict(False, True) is Verdict.NOT_SIGNIFICANT
    assert significance_verdict(True, True) is Verdict.YES
    assert significance_verdict(True, False) is Verdict.REFERENCE_BETTER


@pytest.mark.parametrize("name, metric, qualifiers, kind_and_variant", [
    ("pixel_flipping", "pixel_flipping", (), ("", "")),
    ("continuity[sigma=0.05]", "continuity", ("sigma=0.05",), ("sigma=0.05", "")),
    ("pair_deletion[same]", "pair_deletion", ("same",), ("same", "")),
    ("pair_deletion[same,conditional]", "pair_deletion", ("same", "conditional"), ("same", "conditional"))])
def test_row_names_read_back_as_written(name, metric, qualifiers, kind_and_variant):
    row = RowName.parse(name)
    assert (row.metric, row.qualifiers, row.kind_and_variant) == (metric, qualifiers, kind_and_variant)
    assert str(row) == name


def test_pair_rows_are_named_by_kind_then_variant():
    assert str(RowName.of_pair("pair_insertion", "view")) == "pair_insertion[view]"
    assert str(RowName.of_pair("pair_insertion", "view", "normalised")) == "pair_insertion[view,normalised]"


def test_rows_sort_by_metric_then_variant_with_roads_scores_in_pixel_flippings_order():
    """Every table and figure sorts rows with one key: the pixel-flipping metrics come as
    registered (paper's, normalised, calibrated, logit) and ROAD's variant rows follow the
    same order; other variants and pair rows by their names (as written) after their metric."""
    shuffled = ["road_morf[logit]", "road[normalised]", "pixel_flipping_logit", "road_morf", "road_morf[calibrated]",
                "continuity[sigma=0.1]", "pixel_flipping", "road_morf[normalised]", "continuity", "road",
                "pixel_flipping_normalised", "continuity[sigma=0.05]", "road[logit]", "pixel_flipping_calibrated",
                "road[calibrated]", "pair_deletion[same,normalised]", "pair_deletion[same]",
                "pair_deletion[same,conditional]"]
    assert ordered_metrics(shuffled) == [
        "pixel_flipping", "pixel_flipping_normalised", "pixel_flipping_calibrated", "pixel_flipping_logit",
        "continuity", "continuity[sigma=0.05]", "continuity[sigma=0.1]",
        "road_morf", "road_morf[normalised]", "road_morf[calibrated]", "road_morf[logit]",
        "road", "road[normalised]", "road[calibrated]", "road[logit]",
        "pair_deletion[same,conditional]", "pair_deletion[same,normalised]", "pair_deletion[same]"]
    assert sorted(shuffled, key=metric_sort_key) == ordered_metrics(shuffled)
