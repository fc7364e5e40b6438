"""jaxlab.train — train state, generic loop, EMA, checkpoints, run files, experiments."""

from jaxlab.train.checkpoint import Checkpointer, CheckpointError, UnreadableCheckpointError
from jaxlab.train.config import TrainConfig, check_divisible, check_fields
from jaxlab.train.experiment import (
    RESUMABLE_FIELDS,
    Experiment,
    WorkdirError,
    flat_fields,
    has_progress,
    import_experiment_file,
    prepare_workdir,
    read_run_config,
    run_experiment,
    validate_config,
)
from jaxlab.train.files import (
    MetricsLog,
    atomic_path,
    is_writer,
    save_array,
    save_arrays,
    save_figure,
    save_image,
    write_json_atomic,
    write_results,
    write_text_atomic,
)
from jaxlab.train.loop import (
    Arm,
    NonFiniteLossError,
    TrainingInterrupted,
    init_state,
    restore_params,
    restore_state,
    train,
    train_arms,
    train_step,
)
from jaxlab.train.optimizers import adamw_with_warmup
from jaxlab.train.plots import plot_metrics
from jaxlab.train.rng import named_key
from jaxlab.train.state import Context, TrainState, describe_ema, ema_decay_at, ema_update

__all__ = [
    "RESUMABLE_FIELDS",
    "Arm",
    "CheckpointError",
    "Checkpointer",
    "Context",
    "Experiment",
    "MetricsLog",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainState",
    "TrainingInterrupted",
    "UnreadableCheckpointError",
    "WorkdirError",
    "adamw_with_warmup",
    "atomic_path",
    "check_divisible",
    "check_fields",
    "describe_ema",
    "ema_decay_at",
    "ema_update",
    "flat_fields",
    "has_progress",
    "import_experiment_file",
    "init_state",
    "is_writer",
    "named_key",
    "plot_metrics",
    "prepare_workdir",
    "read_run_config",
    "restore_params",
    "restore_state",
    "run_experiment",
    "save_array",
    "save_arrays",
    "save_figure",
    "save_image",
    "train",
    "train_arms",
    "train_step",
    "validate_config",
    "write_json_atomic",
    "write_results",
    "write_text_atomic",
]
