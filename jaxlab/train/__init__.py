"""jaxlab.train — train state, generic loop, EMA, checkpoints, run files, experiments."""

from jaxlab.train.checkpoint import CheckpointError, Checkpointer
from jaxlab.train.config import TrainConfig
from jaxlab.train.experiment import (
    RESUMABLE_FIELDS,
    Experiment,
    WorkdirError,
    import_experiment_file,
    prepare_workdir,
    read_run_config,
    run_experiment,
)
from jaxlab.train.files import MetricsLog, write_json_atomic, write_results
from jaxlab.train.loop import (
    NonFiniteLossError,
    TrainingInterrupted,
    init_state,
    restore_state,
    train,
    train_step,
)
from jaxlab.train.optimizers import adamw_with_warmup
from jaxlab.train.plots import plot_metrics
from jaxlab.train.rng import named_key
from jaxlab.train.state import Context, TrainState, ema_update

__all__ = [
    "RESUMABLE_FIELDS",
    "CheckpointError",
    "Checkpointer",
    "Context",
    "Experiment",
    "MetricsLog",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "WorkdirError",
    "adamw_with_warmup",
    "ema_update",
    "import_experiment_file",
    "init_state",
    "named_key",
    "plot_metrics",
    "prepare_workdir",
    "read_run_config",
    "restore_state",
    "run_experiment",
    "train",
    "train_step",
    "write_json_atomic",
    "write_results",
]
