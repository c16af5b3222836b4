"""What the pipeline commands print when they are done: one line per stage (``DONE``) and the
closing summary of a run (``print_summary``), which ``python -m pipelines.run`` prints too."""

from __future__ import annotations

import json
from pathlib import Path


def _split_counts(table) -> dict:
    from audioflow.split import summary

    return summary(table)["counts"]


# What `audioflow <stage>` says when it is done; a stage not listed says where its folder is.
DONE = {
    "ingest": lambda ds, _: f"{len(ds.files)} recordings, {len(ds.labels)} classes, fingerprint {ds.fingerprint[:12]}",
    "featurize": lambda f, _: (f"{len(f.index)} windows of {f.spec.window_samples / f.spec.sample_rate:g} s "
                               f"({f.spec.n_mels}x{f.spec.n_frames} log-mel) at {f.spec.sample_rate} Hz"),
    "split": lambda table, lay: str(_split_counts(table)) if not _kfold(lay) else _folds_line(table),
    "train": lambda r, _: (f"best epoch {r.best_epoch}, val {r.monitor} {r.best_metric:.4f}, "
                        f"{len(r.history)} epochs"
                        + (f", then {len(r.refit_history)} on train + val" if r.refit_history else "")
                        + f" in {r.seconds:.1f}s on {r.device}"
                        + (f" (resumed after epoch {r.resumed_from_epoch})" if r.resumed_from_epoch else "")),
    "evaluate": lambda m, _: (f"test accuracy {m['accuracy']:.4f}{_ci(m, 'accuracy')}, macro-F1 "
                              f"{m['macro_f1']:.4f}{_ci(m, 'macro_f1')} on {m['n']} recordings"
                              if "std" not in m else f"{_cv_line(m)} (mean ± std over folds)"),
    "export": lambda r, lay: (f"{lay.onnx} ({r.get('size_bytes', 0) / 1e6:.2f} MB), ONNX Runtime vs PyTorch "
                         f"max |diff| {r.get('max_abs_diff', float('nan')):.2e}" + _int8_line(r.get("int8"), lay)),
}


def _iv(ci: dict | None) -> str:
    """`` [low, high]`` of an interval in metrics.json (nothing if there is none)."""
    return f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci and None not in (ci["low"], ci["high"]) else ""


def _ci(m: dict, key: str) -> str:
    """The bootstrap interval of ``key`` in metrics ``m``."""
    return _iv((m.get("intervals") or {}).get(key))


def _kfold(lay) -> bool:
    from audioflow.split import fold_names

    return bool(fold_names(lay.path("split")))


def _folds_line(table) -> str:
    counts = _split_counts(table)
    per_fold = table["fold"].value_counts().to_dict()
    per_fold = dict(sorted(per_fold.items(), key=lambda kv: (len(kv[0]), kv[0])))  # 1, 2, ..., 10
    return (f"folds {per_fold} (recordings each fold tests); "
            f"final model train {counts['train']} / val {counts['val']}")


DONE["train_fold"] = DONE["train"]
DONE["evaluate_fold"] = DONE["evaluate"]


def _cv_line(m: dict) -> str:
    """Cross-validated figures as mean ± std, e.g. ``accuracy 0.953 ± 0.012, ...``."""
    return ", ".join(f"{name} {m[key]:.3f} ± {m['std'][key]:.3f}" for key, name in
                     (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("balanced_accuracy", "balanced accuracy")))


def _int8_line(q: dict | None, lay) -> str:
    if not q:
        return ""
    verdict = "within" if q["within_target"] else "MISSES"
    return (f"\nexport: INT8 {lay.path('onnx_model') / 'model.int8.onnx'} ({q['size_bytes'] / 1e6:.2f} MB): "
            f"{q.get('scored_on', 'test')} macro-F1 {q['test_macro_f1_fp32']:.4f} FP32 vs "
            f"{q['test_macro_f1_int8']:.4f} INT8, drop "
            f"{q['macro_f1_drop']:+.4f} ({verdict} the {q['max_drop']} target)")


def print_summary(dataset_json: Path, outputs: Path, seconds: float) -> None:
    """The closing lines of a run: data, split, test figures, where the results are."""
    ds = json.loads(dataset_json.read_text())
    metrics = json.loads((outputs / "metrics.json").read_text())
    s = metrics["split"]
    print()
    groups = {0: "no groups", 1: "1 group"}.get(ds["n_groups"], f"{ds['n_groups']} groups")
    print(f"dataset      {ds['root']}: {ds['n_files']} recordings, {len(ds['labels'])} classes "
          f"({', '.join(ds['labels'])}), {groups}")
    for warning in ds.get("warnings", []):
        print(f"warning      {warning}")
    if (report := outputs / "validation_report.json").is_file():
        v = json.loads(report.read_text())["summary"]
        left_out = f", {v['n_quarantined']} left out (quarantine.csv)" if v.get("n_quarantined") else ""
        print(f"validation   {v['n_used']} of {v['n_listed']} listed recordings used{left_out}, "
              f"{v['n_warnings']} warning(s): {report.with_suffix('.html')}")
    if "cross_validation" in metrics:
        cv = metrics["cross_validation"]
        print(f"split        {cv['k']} folds ({', '.join(cv['folds'])}): each model tested on its own fold; "
              f"final model: train {s['train']} / val {s['val']} recordings")
        print(f"cross-val    {_cv_line(metrics)} (mean ± std over {cv['k']} folds, "
              f"{metrics['n']} recordings each tested once)")
        for fold, m in metrics["folds"].items():
            print(f"  fold {fold:<6} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f} on {m['n']} recordings")
        if pooled := metrics.get("pooled"):
            print(f"pooled       accuracy {pooled['accuracy']:.3f}{_ci(metrics, 'accuracy')}, macro-F1 "
                  f"{pooled['macro_f1']:.3f}{_ci(metrics, 'macro_f1')}, balanced accuracy "
                  f"{pooled['balanced_accuracy']:.3f}{_ci(metrics, 'balanced_accuracy')}{_interval_note(metrics)}")
    else:
        print(f"split        train {s['train']} / val {s['val']} / test {s['test']} recordings")
        print(f"test         accuracy {metrics['accuracy']:.3f}{_ci(metrics, 'accuracy')}, macro-F1 "
              f"{metrics['macro_f1']:.3f}{_ci(metrics, 'macro_f1')}, balanced accuracy "
              f"{metrics['balanced_accuracy']:.3f}{_ci(metrics, 'balanced_accuracy')}{_interval_note(metrics)}")
    print(f"confusion    {outputs / 'confusion_matrix.png'}")
    for line in _reliability_lines(metrics, outputs):
        print(line)
    print(f"model        {outputs / 'model.onnx'}")
    print(f"took         {seconds:.0f}s")


def _interval_note(metrics: dict) -> str:
    iv = metrics.get("intervals")
    if not iv:
        return ""
    return f" ({iv['confidence']:.0%} bootstrap intervals over {iv['n_units']} {iv['unit']}s)"


def _reliability_lines(metrics: dict, outputs: Path) -> list[str]:
    """Curves, calibration, operating point and model card lines of the summary (when measured)."""
    lines = []
    if (auc := metrics.get("auc")) and auc.get("macro") is not None:
        ap = metrics["average_precision"]["macro"]
        lines.append(f"curves       macro ROC AUC {auc['macro']:.3f}, macro average precision {ap:.3f}: "
                     f"{outputs / 'curves.png'}")
    if cal := metrics.get("calibration"):
        how = f"temperature {cal['temperature']:g} fitted on val" if cal["temperature"] != 1.0 else "not calibrated"
        if "fold_temperatures" in cal:  # kfold: each fold's model with its own
            how = f"each fold's temperature; the exported model's {cal['temperature']:g}"
        lines.append(f"calibration  ECE {cal['ece_uncalibrated']:.3f} -> {cal['ece']:.3f} ({how}): "
                     f"{outputs / 'reliability.png'}")
    if op := metrics.get("operating_point"):
        t = op["test"]
        spec = "n/a" if t["specificity"] is None else f"{t['specificity']:.3f}"
        rec = "n/a" if t["recall"] is None else f"{t['recall']:.3f}"
        lines.append(f"operating pt {'+'.join(op['positive_labels'])} vs rest at {op['threshold']:.4g} (recall "
                     f"{op['target_recall']:g} on val): test recall {rec}{_iv(t.get('recall_interval'))}, "
                     f"specificity {spec}{_iv(t.get('specificity_interval'))}")
    if (outputs / "model_card.md").is_file():
        lines.append(f"model card   {outputs / 'model_card.md'}")
    return lines
