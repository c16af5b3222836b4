"""Training: ``train`` runs the loop (``loop``) over the pieces beside it.

``state`` (the explicit training state, ``TrainResult``, run keys), ``build`` (a pass's model,
optimizer and schedule), ``batches`` (waveform or stored-feature batches), ``augment``
(SpecAugment, gain, mixup), ``loss`` (class weights, losses, epoch order), ``step`` and
``graph`` (one step, eager or as a CUDA graph), ``device`` (placement, AMP), ``early_stopping``
(selection on val), ``resume`` (checkpoints, RNG state), ``finetune`` (``train.init_from``) and
``history`` (history.csv, curves). The names other code imports are re-exported here.
"""

from audioflow.training.augment import apply_gain, apply_masks, gain_draws, mask_draws, mixup, random_gain, spec_augment
from audioflow.training.batches import FeatureBatches, WaveformBatches
from audioflow.training.build import CHUNK, mel_statistics, start_pass
from audioflow.training.device import amp_setup, fits_on, pick_device, place_model, to_device
from audioflow.training.early_stopping import Selection, score
from audioflow.training.finetune import FineTuneError, init_state, set_backbone_frozen
from audioflow.training.graph import GraphedStep, NotCapturable
from audioflow.training.history import HISTORY_COLUMNS, refit_row, write_history
from audioflow.training.loop import train
from audioflow.training.loss import capturable_loss_fn, class_weights, epoch_order, loss_fn
from audioflow.training.resume import (
    load_checkpoint,
    restore_pass,
    restore_rng_state,
    rng_state,
    save_checkpoint,
    seed_everything,
)
from audioflow.training.state import PassState, TrainResult, TrainState, dataset_fingerprint, model_hash, run_key
from audioflow.training.step import step_draws, step_loss

__all__ = [
    "CHUNK", "HISTORY_COLUMNS", "FeatureBatches", "FineTuneError", "GraphedStep", "NotCapturable", "PassState",
    "Selection", "TrainResult", "TrainState", "WaveformBatches", "amp_setup", "apply_gain", "apply_masks",
    "capturable_loss_fn", "class_weights", "dataset_fingerprint", "epoch_order", "fits_on", "gain_draws",
    "init_state", "load_checkpoint", "loss_fn", "mask_draws", "mel_statistics", "mixup", "model_hash", "pick_device",
    "place_model", "random_gain", "refit_row", "restore_pass", "restore_rng_state", "rng_state", "run_key",
    "save_checkpoint", "score", "seed_everything", "set_backbone_frozen", "spec_augment", "start_pass",
    "step_draws", "step_loss", "to_device", "train", "write_history",
]
