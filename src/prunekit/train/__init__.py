"""The training engine shared by every method: Trainer, TrainConfig, callbacks, checkpoints, DDP."""

from prunekit.train.bn import recalibrate_bn
from prunekit.train.callbacks import (Callback, CallbackList, EpochEnd, L1Subgradient, LossTerm, TrainOnly,
                                      bn_weights)
from prunekit.train.checkpoint import atomic_torch_save, load_checkpoint, seed_everything
from prunekit.train.config import TrainConfig
from prunekit.train.schedule import lr_factor
from prunekit.train.trainer import (CHECKPOINT_NAME, EvalResult, FitResult, LossFn, OptimizerFactory, Trainer,
                                    TrainingInterrupted, evaluate, step_seed)

__all__ = ["Callback", "CallbackList", "EpochEnd", "L1Subgradient", "LossTerm", "TrainOnly", "bn_weights",
           "atomic_torch_save", "load_checkpoint", "seed_everything", "TrainConfig", "lr_factor",
           "CHECKPOINT_NAME", "EvalResult", "FitResult", "LossFn", "OptimizerFactory", "Trainer",
           "TrainingInterrupted", "evaluate", "step_seed", "recalibrate_bn"]
