"""The model card (``model_card.md``): what the model is, what it was trained and tested on, how
well it does with how much certainty, how to read its probabilities and threshold, and where it
should not be trusted.

Written by ``evaluate`` from the run's own files only (the evaluation it just wrote, the split's
and the trained model's folders), so the card cannot disagree with the figures beside it; the
same run gives the same card under the CLI, DVC, ZenML and Kubeflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import audioflow

SMALL_CLASS = 10  # test recordings of a class below which its figures are called rough
FEW_UNITS = 10  # resampled units (groups, recordings) below which an interval is itself rough


def _level(spec: dict) -> str:
    if spec.get("level", "absolute") == "peak":
        return f"dB re each window's loudest cell, {spec['top_db']:g} dB kept: the recording level does not matter"
    return "dB re full scale: the recording level is part of the input"


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(interval: dict | None, digits: int = 3) -> str:
    """`` [low, high]`` of an interval in metrics.json ({"low", "high"}); nothing without one."""
    if not interval or interval.get("low") is None or interval.get("high") is None:
        return ""
    return f" [{interval['low']:.{digits}f}, {interval['high']:.{digits}f}]"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(path: Path, evaluation: Path, split: Path, trained_model: Path) -> str:
    """Render the card from ``evaluation`` (metrics.json, serving.json, params.json), ``split``
    (split.json, params.json) and ``trained_model`` (params.json, model/model.json); write it to
    ``path`` and return it."""
    train_params = _read(trained_model / "params.json")
    summary = trained_model / "train.json"
    if train_params.get("train", {}).get("epochs") == "auto" and summary.exists():
        # What train.epochs auto made of this collection (config.TrainConfig.schedule).
        train_params["train"]["epochs"] = f"auto ({_read(summary)['epochs']})"
    text = render_model_card(
        metrics=_read(evaluation / "metrics.json"), serving=_read(evaluation / "serving.json"),
        evaluate=_read(evaluation / "params.json")["evaluate"], split_info=_read(split / "split.json"),
        split_params=_read(split / "params.json"), train_params=train_params,
        model=_read(trained_model / "model" / "model.json"))
    path.write_text(text)
    return text


def render_model_card(*, metrics: dict, serving: dict, evaluate: dict, split_info: dict, split_params: dict,
                      train_params: dict, model: dict) -> str:
    labels = list(model["labels"])
    spec = model["spec"]
    data, split_cfg = split_params["data"], split_params["split"]
    kfold = "cross_validation" in metrics
    intervals = metrics.get("intervals") or {}
    calib = metrics.get("calibration") or {}
    op = metrics.get("operating_point")
    sr, window_s = spec["sample_rate"], spec["window_samples"] / spec["sample_rate"]
    group_col = data.get("group_column")
    out: list[str] = []
    add = out.append

    add(f"# Model card: {model['model_name']} audio classifier ({len(labels)} classes)\n")
    add(f"Made by audioflow {audioflow.__version__} from this run's own files; the figures are those of "
        "`metrics.json` beside it.\n")

    add("## Model\n")
    add(f"- Architecture: `{model['model_name']}` {json.dumps(model['model_kwargs'], sort_keys=True)}")
    add(f"- Classes: {', '.join(f'`{lab}`' for lab in labels)}")
    add(f"- Input: mono audio at {sr} Hz (any file is mixed down and resampled), {window_s:g} s windows "
        f"(hop {spec['window_hop_samples'] / sr:g} s), {spec['n_mels']}-band log-mel "
        f"({_level(spec)}) inside the ONNX graph; "
        "a longer recording is the mean of its windows' probabilities")
    add(f"- Output: calibrated class probabilities (the graph divides the logits by the temperature "
        f"{serving['temperature']:g} fitted on validation)" if serving["temperature"] != 1.0 else
        "- Output: class probabilities (softmax of the logits; not calibrated: `evaluate.calibrate` was false)")
    add(f"- Parameters hash: `{model['params_hash']}` (the model, training and feature parameters)\n")

    add("## Data\n")
    add(f"- Collection: `{data['root']}`, fingerprint `{model['dataset_fingerprint']}` (content hash of every "
        "recording used)")
    grouping = (f"by `{group_col}`: every {group_col}'s recordings are in one part only" if group_col
                else "none (`data.group_column` is null): each recording is its own unit")
    add(f"- Grouping: {grouping}")
    strategy = split_cfg["strategy"]
    if kfold:
        cv = metrics["cross_validation"]
        add(f"- Split: {cv['k']}-fold cross-validation (folds {', '.join(map(str, cv['folds']))}); each "
            "recording tested once, by the model of the fold that held it out; the exported model trained "
            "on every recording (validation part for early stopping, calibration and the threshold)")
    else:
        how = {"stratified": f"stratified by label, seed {split_cfg['seed']}, val {split_cfg['val_fraction']:g}, "
                             f"test {split_cfg['test_fraction']:g}",
               "predefined": f"the collection's own (`{data.get('fold_column')}` column)"}.get(strategy, strategy)
        add(f"- Split: {how}")
    per = split_info.get("per_label", {})
    parts = [p for p in ("train", "val", "test") if split_info["counts"].get(p)]
    rows = [[f"`{lab}`", *[str(per.get(p, {}).get(lab, 0)) for p in parts]] for lab in labels]
    rows.append(["all", *[str(split_info["counts"][p]) for p in parts]])
    if group_col:
        rows.append([f"{group_col}s", *[str(split_info.get("groups", {}).get(p, "")) for p in parts]])
    add("")
    add(_table(["recordings", *parts], rows))
    add("")

    add("## Training\n")
    train = train_params.get("train", {})
    keys = ("epochs", "batch_size", "lr", "weight_decay", "label_smoothing", "class_weight", "loss", "sampler",
            "seed", "init_from")
    add("- " + ", ".join(f"`{k}` {train[k]}" for k in keys if train.get(k) is not None))
    augment = ("shift", "speed", "noise_prob", "noise_snr_db", "gain_db", "freq_mask", "time_mask", "mixup")
    add("- Augmentation of training batches: " + ", ".join(f"`{k}` {train[k]}" for k in augment if k in train))
    if train.get("refit"):
        add("- The epoch was chosen on the validation part; the model was then trained again, from the start, on "
            "train + validation for that many epochs (`train.refit`). Calibration and the threshold come from "
            "the chosen model, which never heard the validation recordings")
    add("- Every parameter is in `artifacts/train/params.json` (and `params.yaml` of the commit)\n")

    add("## Performance\n")
    n_test = metrics["n"]
    if intervals:
        unit = intervals["unit"]
        unit_name = f"{group_col}s" if unit == "group" and group_col else f"{unit}s"
        add(f"On {n_test} test recordings" + (" (every recording, out of fold)" if kfold else "")
            + f"; in brackets the {intervals['confidence']:.0%} bootstrap interval over {intervals['n_units']} "
            f"{unit_name} ({intervals['resamples']} resamples" + (", stratified by class" if intervals.get("stratified")
                                                                 else "") + ").\n")
    names = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro-F1"}
    rows = []
    for key, name in names.items():
        value = metrics.get("pooled", {}).get(key) if kfold else metrics[key]
        row = [name, _f(value) + _ci(intervals.get(key))]
        if kfold:
            row.append(f"{metrics[key]:.3f} ± {metrics['std'][key]:.3f}")
        rows.append(row)
    add(_table(["metric", "pooled out of fold" if kfold else "test"] + (["mean ± std over folds"] if kfold else []),
               rows))
    add("")
    auc, ap = metrics.get("auc", {}), metrics.get("average_precision", {})
    rows = [[f"`{lab}`", _f(pc["precision"]), _f(pc["recall"]), _f(pc["f1"]), _f(auc.get(lab)), _f(ap.get(lab)),
             str(pc["support"])] for lab, pc in metrics["per_class"].items()]
    rows.append(["macro", "", "", "", _f(auc.get("macro")), _f(ap.get("macro")), str(n_test)])
    add(_table(["class", "precision", "recall", "F1", "ROC AUC", "average precision", "test recordings"], rows))
    if kfold:
        add("\nPrecision, recall and F1 per class: the mean over folds; ROC AUC and average precision: every "
            "recording's out-of-fold probabilities pooled.")
    add("\nROC and precision-recall curves (one class against the rest): `curves.png`; the confusion matrix: "
        "`confusion_matrix.png`.\n")

    add("## Calibration\n")
    if calib:
        n_val = serving["calibrated_on"]["recordings"]
        how = (f"temperature scaling, T = {serving['temperature']:g}, fitted on {n_val} validation recordings"
               if serving["temperature"] != 1.0 else "none (T = 1)")
        if "fold_temperatures" in calib:
            temps = ", ".join(f"{f}: {t:g}" for f, t in calib["fold_temperatures"].items())
            how = (f"each fold's model scaled by the temperature fitted on its own validation part ({temps}); the "
                   f"exported model: {how}")
        add(f"- {how}")
        add(f"- Expected calibration error on test ({calib['bins']} bins): {_f(calib['ece_uncalibrated'])} "
            f"uncalibrated, {_f(calib['ece'])} as served; negative log-likelihood {_f(calib['nll_uncalibrated'])} "
            f"-> {_f(calib['nll'])}")
        add("- Reliability diagram: `reliability.png`. A probability of 0.8 should be right about 80 % of the time; "
            "the diagram shows how far that holds on test\n")

    add("## Operating point\n")
    if op:
        pos = ", ".join(f"`{lab}`" for lab in op["positive_labels"])
        neg = ", ".join(f"`{lab}`" for lab in labels if lab not in op["positive_labels"])
        t = op["test"]
        add(f"- Positive: {pos} (their summed probability) against {neg}")
        thr = (f"the threshold of each fold's model, set on its own validation part (exported model: "
               f"{op['threshold']:.6g})" if "fold_thresholds" in op else f"threshold {op['threshold']:.6g}")
        add(f"- {thr}: the highest that reaches recall {op['target_recall']:g} on validation "
            f"(recall there {_f(op['val']['recall'])}, specificity {_f(op['val']['specificity'])})")
        add(f"- On test: recall (sensitivity) {_f(t['recall'])}{_ci(t.get('recall_interval'))}, specificity "
            f"{_f(t['specificity'])}{_ci(t.get('specificity_interval'))}, precision {_f(t['precision'])} "
            f"(TP {t['tp']}, FN {t['fn']}, FP {t['fp']}, TN {t['tn']})")
        add("- Applied on request: `audioflow predict --operating-point`, `audioflow serve --operating-point`\n")
    else:
        add("None set (`evaluate.positive_labels` is empty): the label is the most probable class.\n")

    add("## Intended use\n")
    add(evaluate.get("intended_use") or
        f"Sorting recordings like those of `{data['root']}` into {', '.join(labels)}, where a wrong label is "
        "caught by a person or a later step. It has not been validated on other collections, devices or "
        "populations; it is not a diagnostic device, and a screening use should go through the operating point "
        "with its measured specificity.")
    add("")

    add("## Known limits\n")
    for line in _limits(metrics, intervals, calib, op, group_col, kfold, sr, window_s, strategy):
        add(f"- {line}")
    add("")
    return "\n".join(out)


def _limits(metrics: dict, intervals: dict, calib: dict, op: dict | None, group_col: str | None, kfold: bool,
            sr: int, window_s: float, strategy: str) -> list[str]:
    """The caveats the run's own figures support."""
    out = []
    if intervals:
        f1 = intervals.get("macro_f1")
        units = f"{group_col}s" if intervals["unit"] == "group" and group_col else "independent recordings"
        out.append(f"The test figures rest on {metrics['n']} recordings from {intervals['n_units']} {units}: "
                   f"macro-F1 could be anywhere in{_ci(f1)} on other recordings like these.")
        if intervals["n_units"] < FEW_UNITS:
            out.append(f"With fewer than {FEW_UNITS} {units} the intervals themselves are rough: a resample can only "
                       "reshuffle the few there are, so they understate the uncertainty.")
    if not group_col:
        out.append("Recordings are not grouped: takes of one speaker or patient may be in train and test, which "
                   "flatters the figures.")
    elif strategy == "predefined":
        out.append("The split is the collection's own; where it shares groups between train and test, the test "
                   "figures measure groups seen in training.")
    small = [f"`{lab}` ({pc['support']})" for lab, pc in metrics["per_class"].items() if pc["support"] < SMALL_CLASS]
    if small:
        out.append(f"Few test recordings of {', '.join(small)}: their per-class figures are rough.")
    if calib:
        if calib.get("temperature_at_bound"):
            out.append(f"The temperature stopped at the end of its range ({calib['temperature']:g}): the validation "
                       "split is (nearly) separated perfectly and says little about confidence.")
        if calib.get("ece") is not None and calib.get("ece_uncalibrated") is not None \
                and calib["ece"] > calib["ece_uncalibrated"]:
            out.append("Temperature scaling did not lower the calibration error on test: read the probabilities "
                       "with the reliability diagram in hand.")
    if op and op["test"].get("recall") is not None and op["test"]["recall"] < op["target_recall"]:
        out.append(f"At the operating point the test recall ({op['test']['recall']:.3f}) is below the target "
                   f"{op['target_recall']:g} set on validation: positives will be missed.")
    if kfold:
        out.append("The exported model trained on every recording; its own test figures do not exist: the "
                   "cross-validation figures estimate them.")
    out.append(f"Trained on one collection at {sr} Hz with {window_s:g} s windows: other microphones, sites, "
               "noise or populations can score worse than any figure here says.")
    return out
