"""Curves, bootstrap intervals, calibration and operating points on synthetic data whose answer
is known (audioflow.reliability); the stage on the demo data is in tests/test_evaluation.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audioflow import reliability as r
from audioflow.evaluation import classification_metrics

LABELS = ["cat", "dog", "owl"]


def noisy_predictions(n: int, accuracy: float, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    wrong = (y + rng.integers(1, k, n)) % k
    return y, np.where(rng.random(n) < accuracy, y, wrong)


# --------------------------------------------------------------------------- curves


def test_separable_scores_have_auc_and_ap_of_one():
    y = np.repeat([0, 1, 2], 20)
    probs = np.full((60, 3), 0.1)
    probs[np.arange(60), y] = 0.8
    probs += np.random.default_rng(0).uniform(0, 0.05, probs.shape)  # ties broken, order kept
    curves = r.one_vs_rest_curves(y, probs, LABELS)
    for e in curves["per_class"].values():
        assert e["auc"] == pytest.approx(1.0) and e["average_precision"] == pytest.approx(1.0)
        assert e["roc"]["tpr"][-1] == 1.0 and max(e["roc"]["threshold"]) <= 1.0  # finite thresholds
    assert curves["macro_auc"] == pytest.approx(1.0)


def test_uninformative_scores_have_auc_near_one_half_and_ap_near_prevalence():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 6000)
    curves = r.one_vs_rest_curves(y, rng.dirichlet(np.ones(3), 6000), LABELS)
    for c, e in enumerate(curves["per_class"].values()):
        assert e["auc"] == pytest.approx(0.5, abs=0.03)
        assert e["average_precision"] == pytest.approx((y == c).mean(), abs=0.03)


def test_a_class_without_test_recordings_has_no_curve():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1]])
    curves = r.one_vs_rest_curves(y, probs, LABELS)
    assert curves["per_class"]["owl"]["auc"] is None and "roc" not in curves["per_class"]["owl"]
    assert curves["macro_auc"] == pytest.approx(1.0)  # the mean of the classes that have a curve
    roc, pr = r.curve_tables(curves)
    assert set(roc["class"]) == set(pr["class"]) == {"cat", "dog"}


# --------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("seed", range(5))
def test_resample_of_the_split_itself_gives_the_reported_metrics(seed: int):
    """A row of ones (every unit once) reproduces classification_metrics, absent classes included."""
    y, pred = noisy_predictions(50, 0.6, k=4, seed=seed)
    if seed == 0:
        pred[pred == 3] = 0  # a class never predicted
    if seed == 1:
        y[y == 2] = 1  # a class never present
    m = classification_metrics(y, pred, ["a", "b", "c", "d"])
    unit = np.arange(len(y))
    d = r.metric_draws(y, pred, 4, unit, np.ones((1, len(y))))
    for key in r.SCORES:
        assert d[key][0] == pytest.approx(m[key]), key


def test_interval_holds_the_estimate_and_shrinks_with_more_recordings():
    widths = []
    for n in (60, 600, 6000):
        y, pred = noisy_predictions(n, 0.8, seed=n)
        ci = r.bootstrap_intervals(y, pred, 3)
        m = classification_metrics(y, pred, LABELS)
        for key in r.SCORES:
            assert ci[key][0] <= m[key] <= ci[key][1], (n, key)
        assert ci["unit"] == "recording" and ci["n_units"] == n and ci["stratified"]
        widths.append(ci["macro_f1"][1] - ci["macro_f1"][0])
    assert widths[0] > 2 * widths[1] > 4 * widths[2]  # ~ 1 / sqrt(n)


def test_same_seed_same_interval_and_the_resampling_is_vectorized_enough():
    import time

    y, pred = noisy_predictions(3000, 0.7, k=10, seed=3)
    t0 = time.perf_counter()
    a = r.bootstrap_intervals(y, pred, 10, n_resamples=1000, seed=4)
    assert time.perf_counter() - t0 < 10  # 1000 resamples of 3000 recordings: well under a second here
    assert a == r.bootstrap_intervals(y, pred, 10, n_resamples=1000, seed=4)
    assert a != r.bootstrap_intervals(y, pred, 10, n_resamples=1000, seed=5)


def test_groups_are_resampled_whole_and_widen_the_interval():
    """Recordings of one patient are all right or all wrong: resampling them one by one
    pretends to ten times the evidence there is."""
    rng = np.random.default_rng(6)
    n_groups, per = 40, 10
    group_label = rng.integers(0, 3, n_groups)
    group_right = rng.random(n_groups) < 0.75
    y = np.repeat(group_label, per)
    pred = np.where(np.repeat(group_right, per), y, (y + 1) % 3)
    groups = [f"p{i}" for i in np.repeat(np.arange(n_groups), per)]
    by_group = r.bootstrap_intervals(y, pred, 3, groups=groups)
    by_recording = r.bootstrap_intervals(y, pred, 3)
    assert by_group["unit"] == "group" and by_group["n_units"] == n_groups and by_group["stratified"]
    width = {name: ci["accuracy"][1] - ci["accuracy"][0] for name, ci in (("g", by_group), ("r", by_recording))}
    assert width["g"] > 2 * width["r"]
    # Empty group names mean "no groups": recordings again.
    assert r.bootstrap_intervals(y, pred, 3, groups=[""] * len(y))["unit"] == "recording"


def test_stratified_only_when_each_class_has_two_units_or_more():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    one_group_per_class = ["a", "a", "b", "b", "c", "c"]
    ci = r.bootstrap_intervals(y, pred, 3, groups=one_group_per_class)
    # A stratum of one unit could never vary: drawn from all units instead, the interval is wide.
    assert not ci["stratified"] and ci["macro_f1"][1] - ci["macro_f1"][0] > 0.1
    mixed = ["a", "b", "a", "b", "a", "b"]  # every group holds every class (FSDD's speakers)
    assert not r.bootstrap_intervals(y, pred, 3, groups=mixed)["stratified"]


def test_paired_difference_zero_for_the_same_model_and_negative_for_a_worse_one():
    y, good = noisy_predictions(200, 0.9, seed=8)
    same = r.paired_difference(y, good, good.copy(), 3)
    assert same["delta"] == 0 and same["delta_interval"] == [0.0, 0.0]
    _, bad = noisy_predictions(200, 0.5, seed=9)
    worse = r.paired_difference(y, bad, good, 3)
    assert worse["delta"] < 0 and worse["delta_interval"][1] < 0
    assert worse["new"] == pytest.approx(classification_metrics(y, bad, LABELS)["macro_f1"])
    slightly = r.paired_difference(y, np.where(np.arange(200) == 0, (y + 1) % 3, good), good, 3)
    assert slightly["delta"] <= 0 <= slightly["delta_interval"][1]  # one recording: within the interval
    with pytest.raises(r.ReliabilityError, match="metric"):
        r.paired_difference(y, good, good, 3, metric="auc")


# --------------------------------------------------------------------------- calibration


def test_ece_is_the_gap_between_confidence_and_accuracy():
    # Every recording at confidence 0.9, 60 % right: ECE 0.3.
    probs = np.tile([0.9, 0.05, 0.05], (100, 1))
    y = np.where(np.arange(100) < 60, 0, 1)
    assert r.expected_calibration_error(probs, y) == pytest.approx(0.3)
    table = r.calibration_table(probs, y, 15)
    assert table["count"].sum() == 100 and table.loc[table["count"] > 0, "bin"].tolist() == [13]
    # Labels drawn from the probabilities themselves: calibrated, ECE small.
    rng = np.random.default_rng(10)
    p = rng.dirichlet(np.ones(3) * 0.7, 20000)
    y = (rng.random(20000)[:, None] > p.cumsum(axis=1)).sum(axis=1)
    assert r.expected_calibration_error(p, y) < 0.02


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_fit_recovers_a_known_miscalibration(true_t: float):
    """Labels drawn from softmax(z); the model reports z * true_t: overconfident (true_t > 1) or
    underconfident. The fitted temperature undoes it, and calibrates."""
    rng = np.random.default_rng(11)
    n = 4000
    z = rng.normal(0, 2.0, (n, 3))
    y = (rng.random(n)[:, None] > r.softmax(z).cumsum(axis=1)).sum(axis=1)
    reported = z * true_t
    one_window = np.arange(n)
    t = r.fit_temperature(reported, one_window, y)
    assert t == pytest.approx(true_t, rel=0.08)
    before = r.expected_calibration_error(r.softmax(reported), y)
    after = r.expected_calibration_error(r.recording_probabilities(reported, one_window, t), y)
    assert after < before and after < 0.03
    assert t == r.fit_temperature(reported, one_window, y)  # deterministic


def test_temperature_of_multi_window_recordings_is_fitted_on_their_mean_probability():
    rng = np.random.default_rng(12)
    n = 1500
    z = rng.normal(0, 2.0, (n, 3))
    y = (rng.random(n)[:, None] > r.softmax(z).cumsum(axis=1)).sum(axis=1)
    windows = np.repeat(z * 3.0, 2, axis=0)  # every recording two identical windows
    recording = np.repeat(np.arange(n), 2)
    assert r.fit_temperature(windows, recording, y) == pytest.approx(3.0, rel=0.1)
    assert r.window_recordings(["b.wav", "a.wav", "b.wav"]).tolist() == [1, 0, 1]  # sorted by path


def test_perfectly_separated_validation_does_not_make_every_answer_certain():
    """The likelihood alone drives T to 0 when validation is separated perfectly; the weak prior
    (worth one recording) stops it where the evidence ends, sharper than 1 but not certain."""
    y = np.repeat([0, 1, 2], 15)
    z = np.eye(3)[y] * 2.0 + np.random.default_rng(14).normal(0, 0.3, (45, 3))
    assert r.fit_temperature(z, np.arange(45), y, prior_sd=0) == r.TEMPERATURE_BOUNDS[0]
    t = r.fit_temperature(z, np.arange(45), y)
    assert r.TEMPERATURE_BOUNDS[0] < t < 1.0


# --------------------------------------------------------------------------- operating point


def test_threshold_reaches_the_target_recall():
    score = np.array([0.95, 0.9, 0.8, 0.4, 0.3, 0.35, 0.1, 0.05])
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    assert r.threshold_for_recall(score, positive, 1.0) == 0.4  # the lowest positive
    assert r.threshold_for_recall(score, positive, 0.75) == 0.8
    assert r.threshold_for_recall(score, positive, 0.7) == 0.8  # ceil(0.7 * 4) = 3 positives
    f = r.screening_figures(score, positive, 0.4)
    assert f == {"recall": 1.0, "specificity": 1.0, "precision": 1.0, "tp": 4, "fn": 0, "fp": 0, "tn": 4}
    f = r.screening_figures(score, positive, 0.33)
    assert f["recall"] == 1.0 and f["specificity"] == 0.75 and f["fp"] == 1
    assert r.screening_figures(score, np.zeros(8, bool), 0.5)["recall"] is None


def _val(rows: list[tuple[str, list[float]]]) -> pd.DataFrame:
    return pd.DataFrame({"path": [f"{i}.wav" for i in range(len(rows))], "actual": [a for a, _ in rows],
                         **{f"p_{lab}": [p[i] for _, p in rows] for i, lab in enumerate(LABELS)}})


def test_operating_point_sums_the_positive_classes():
    val = _val([("cat", [0.1, 0.2, 0.7]), ("dog", [0.3, 0.6, 0.1]), ("owl", [0.5, 0.1, 0.4]),
                ("cat", [0.9, 0.05, 0.05])])
    op = r.fit_operating_point(LABELS, ["dog", "owl"], val, 1.0)
    assert op["threshold"] == pytest.approx(0.5)  # owl's 0.1 + 0.4: the lowest positive sum
    assert op["val"]["recall"] == 1.0 and op["val"]["specificity"] == 0.5
    assert r.fit_operating_point(LABELS, [], val, 1.0) is None
    with pytest.raises(r.ReliabilityError, match=r"\['bat'\] are not labels"):
        r.fit_operating_point(LABELS, ["bat"], val, 1.0)
    with pytest.raises(r.ReliabilityError, match="at least one negative"):
        r.fit_operating_point(LABELS, LABELS, val, 1.0)
    with pytest.raises(r.ReliabilityError, match="no recordings of"):
        r.fit_operating_point(LABELS, ["owl"], val[val["actual"] != "owl"], 1.0)


def test_assess_writes_the_figures_and_tables(tmp_path):
    rng = np.random.default_rng(13)
    n = 90
    y = np.repeat([0, 1, 2], 30)
    z = np.eye(3)[y] * 2 + rng.normal(0, 1.5, (n, 3))
    frame = _val([(LABELS[c], list(p)) for c, p in zip(y, r.softmax(z))])
    raw = _val([(LABELS[c], list(p)) for c, p in zip(y, r.softmax(z * 2))])
    op = r.fit_operating_point(LABELS, ["owl"], frame, 1.0)
    out = r.assess(LABELS, frame, raw, [f"g{i // 3}" for i in range(n)], 0.5, op, tmp_path, n_resamples=200)
    for png in ("curves.png", "reliability.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roc = pd.read_csv(tmp_path / "plots" / "roc.csv")
    assert list(roc.columns) == ["point", "class", "fpr", "tpr", "threshold"] and set(roc["class"]) == set(LABELS)
    rel = pd.read_csv(tmp_path / "plots" / "reliability.csv")
    assert set(rel["model"]) == {"uncalibrated", "temperature 0.5"}
    assert out["intervals"]["unit"] == "group" and out["intervals"]["n_units"] == 30
    assert out["calibration"]["ece"] < out["calibration"]["ece_uncalibrated"]  # the raw scores were too sharp
    assert out["operating_point"]["test"]["recall"] == 1.0  # the threshold came from the same recordings
    assert out["operating_point"]["threshold"] == op["threshold"]  # exact, never rounded


def test_a_perfect_score_gets_the_exact_bound_not_a_zero_width_interval():
    """Every test recording right: no resample can differ, and [1, 1] would claim certainty. The
    exact binomial bound for n of n right stands in (0.025 ** (1 / n): 30 units -> 0.884)."""
    y = np.repeat([0, 1, 2], 10)
    ci = r.bootstrap_intervals(y, y.copy(), 3)
    for key in r.SCORES:
        assert ci[key] == [pytest.approx(0.025 ** (1 / 30)), 1.0], key
    assert ci["accuracy"][0] == pytest.approx(0.8843, abs=1e-4)
    groups = [f"p{i // 5}" for i in range(30)]  # 6 patients: far less evidence
    assert r.bootstrap_intervals(y, y.copy(), 3, groups=groups)["accuracy"][0] == pytest.approx(0.025 ** (1 / 6))
    score = np.where(y > 0, 0.9, 0.1)
    screen = r.screening_intervals(score, y > 0, 0.5)
    assert screen["recall"][0] == pytest.approx(0.025 ** (1 / 20)) and screen["specificity"][0] == pytest.approx(
        0.025 ** (1 / 10))
    nothing = r.screening_intervals(score, y > 0, 2.0)  # a threshold nothing reaches: recall 0
    assert nothing["recall"] == [0.0, pytest.approx(1 - 0.025 ** (1 / 20))]
