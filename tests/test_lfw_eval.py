"""LFW verification metrics and ``photoveil models eval`` on the shipped fixture."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from photoveil.data.faces import parse_pairs
from photoveil.errors import InvalidInput
from photoveil.evaluation import lfw as lfw_eval

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lfw_small"


def test_best_threshold_and_kfold_on_separable_scores():
    rng = np.random.default_rng(0)
    same = np.arange(200) % 2 == 0
    scores = np.where(same, rng.uniform(0.5, 1.0, 200), rng.uniform(-0.5, 0.4, 200))
    assert 0.4 < lfw_eval.best_threshold(scores, same) < 0.5
    acc, std, thr = lfw_eval.kfold_accuracy(scores, same, folds=10)
    assert acc == 1.0 and std == 0.0 and 0.4 < thr < 0.5
    assert lfw_eval.roc_auc(scores, same) == 1.0


def test_kfold_on_noise_is_near_chance_and_folds_are_stratified():
    rng = np.random.default_rng(1)
    same = np.r_[np.ones(300, bool), np.zeros(300, bool)]  # all same pairs first, like the fixture
    scores = rng.normal(size=600)
    acc, std, _ = lfw_eval.kfold_accuracy(scores, same, folds=10)
    assert 0.4 < acc < 0.6 and std > 0
    assert abs(lfw_eval.roc_auc(scores, same) - 0.5) < 0.1
    with pytest.raises(ValueError, match="same and"):
        lfw_eval.kfold_accuracy(scores[:305], same[:305], folds=10)


def test_partial_overlap_accuracy_matches_hand_count():
    # same: 0.9 0.8 0.3 ; different: 0.5 0.2 0.1 -> best single threshold gets 5/6
    scores = np.array([0.9, 0.8, 0.3, 0.5, 0.2, 0.1])
    same = np.array([1, 1, 1, 0, 0, 0], bool)
    thr = lfw_eval.best_threshold(scores, same)
    assert ((scores > thr) == same).mean() == pytest.approx(5 / 6)
    assert lfw_eval.roc_auc(scores, same) == pytest.approx(8 / 9)


def _args(*argv):
    parser = argparse.ArgumentParser()
    lfw_eval.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_argument_validation():
    with pytest.raises(InvalidInput, match="accepted: faceapi-resnet34"):
        lfw_eval.main(_args("--models", "vggface"))
    with pytest.raises(InvalidInput, match="--pairs must be >= 20"):
        lfw_eval.main(_args("--pairs", "5"))
    with pytest.raises(SystemExit):
        _args("--alignment", "funnel")


@pytest.mark.models
@pytest.mark.parametrize("name", ["faceapi-resnet34", "faceres", "faceres-deep"])
def test_strong_recognizers_separate_fixture_pairs(face_models_dir, name, tmp_path):
    pairs = parse_pairs(FIXTURE / "pairs.txt")
    rec = lfw_eval.evaluate_model(name, pairs, alignment="landmarks", folds=10)
    assert rec["accuracy"] >= 0.9, rec
    assert rec["auc"] >= 0.95, rec


@pytest.mark.models
def test_eval_command_json(face_models_dir, tmp_path, capsys):
    out = tmp_path / "acc.json"
    args = _args("--models", "mobileface", "--data", str(FIXTURE), "--alignment", "center",
                 "--json", "--out", str(out))
    assert lfw_eval.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    rec = printed["mobileface"]
    assert {"accuracy", "std", "auc", "pairs", "alignment", "command"} <= set(rec)
    assert rec["pairs"] == 120 and rec["alignment"] == "center"
    assert 0.5 <= rec["accuracy"] <= 1.0 and 0.5 <= rec["auc"] <= 1.0
    assert rec["command"].startswith("photoveil models eval --models mobileface")


def test_update_registry_merges(tmp_path):
    path = tmp_path / "lfw_accuracy.json"
    lfw_eval.update_registry({"a": {"accuracy": 0.9}}, path)
    lfw_eval.update_registry({"b": {"accuracy": 0.8}}, path)
    assert json.loads(path.read_text()) == {"a": {"accuracy": 0.9}, "b": {"accuracy": 0.8}}
