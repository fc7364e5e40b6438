"""The generic training loop: any method adapter, any optax optimizer, 1 to N devices.

The loop knows no particular method. A method provides ``init(key, batch)`` and
either ``loss(params, batch, *, key, ctx)`` — differentiated here — or its own
``train_step(params, opt_state, batch, *, key, ctx) -> (params, opt_state, metrics)`` with ``init_opt_state(params)`` for
alternating updates of several networks. After either, the loop updates the
EMA and the step counter.

Reproducibility: step ``s`` uses the data batch ``batches(s)`` and the key
``fold_in(state.key, s)``, so a run resumed from a checkpoint produces the same
parameters, bit for bit on CPU, as an uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxlab import parallel
from jaxlab.train import throughput
from jaxlab.train.checkpoint import Checkpointer, CheckpointError, UnreadableCheckpointError
from jaxlab.train.config import TrainConfig
from jaxlab.train.files import MetricsLog, is_writer, write_json_atomic
from jaxlab.train.plots import plot_metrics
from jaxlab.train.rng import named_key
from jaxlab.train.signals import StopRequest
from jaxlab.train.state import Context, TrainState, ema_decay_at, ema_update

Batch = Any
BatchFn = Callable[[int], Batch]
EvalFn = Callable[[TrainState], dict[str, Any]]
log = logging.getLogger("jaxlab.train")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint after the last finite step is written."""

    def __init__(self, step: int, value: float, last_checkpoint: int | None):
        self.step, self.value, self.last_checkpoint = step, value, last_checkpoint
        kept = f"the last good checkpoint (step {last_checkpoint}) is kept" if last_checkpoint else "no checkpoint was written"
        super().__init__(f"loss is {value} at step {step}; training stopped and {kept}")


class TrainingInterrupted(RuntimeError):
    """A SIGINT/SIGTERM stopped training after a checkpoint of the current step."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        super().__init__(f"interrupted by signal {signum} at step {step}; checkpoint written")


def has_own_train_step(method: Any) -> bool:
    return callable(getattr(method, "train_step", None))


def _init_takes_frozen(method: Any) -> bool:
    return "frozen" in inspect.signature(method.init).parameters


def init_state(method: Any, optimizer: optax.GradientTransformation, batch: Batch, seed: int, frozen: Any = None) -> TrainState:
    """Initial parameters, optimizer state and EMA for ``method`` (pure; jit it).

    Parameters come from the stream ``named_key(seed, "init")`` and the
    per-step keys from ``named_key(seed, "train")``; experiments draw their
    data and evaluation streams under other names. ``frozen`` reaches a
    method whose ``init`` takes it (SiD starts from its teacher).
    """
    key = named_key(seed, "init")
    params = method.init(key, batch, frozen=frozen) if _init_takes_frozen(method) else method.init(key, batch)
    opt_state = method.init_opt_state(params) if has_own_train_step(method) else optimizer.init(params)
    return TrainState.create(params, opt_state, key=named_key(seed, "train"))


def train_step(
    method: Any,
    optimizer: optax.GradientTransformation,
    ema_decay: float,
    state: TrainState,
    batch: Batch,
    frozen: Any = None,
    *,
    ema_warmup: bool = True,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step (pure; the loop jits it with the state donated).

    The EMA is updated with ``ema_decay_at(state.step, ema_decay, warmup=ema_warmup)``.
    """
    key = jax.random.fold_in(state.key, state.step)
    ctx = Context(step=state.step, ema_params=state.ema_params, frozen=frozen)
    if has_own_train_step(method):
        params, opt_state, metrics = method.train_step(state.params, state.opt_state, batch, key=key, ctx=ctx)
        new_state = state.replace(params=params, opt_state=opt_state)
    else:

        def loss_fn(params):
            return method.loss(params, batch, key=key, ctx=ctx)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(params=params, opt_state=opt_state)
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
    decay = ema_decay_at(state.step, ema_decay, warmup=ema_warmup)
    new_state = new_state.replace(ema_params=ema_update(state.ema_params, new_state.params, decay), step=state.step + 1)
    return new_state, metrics


def _tally(tally: dict | None, metrics: dict[str, jax.Array], step_after: jax.Array, length: int) -> dict:
    """Adds one dispatch's metrics to the device-side tally kept between two log lines.

    ``tally`` holds the float32 sums of the scalar metrics (``(length,)`` rows
    for a chunk), the first step whose loss was not finite (-1 while all were)
    and that loss. ``step_after`` is the state's step after the dispatch, so
    nothing here comes from the host.
    """
    per_step = {name: value for name, value in metrics.items() if jnp.ndim(value) == (0 if length == 1 else 1)}
    losses = jnp.reshape(metrics["loss"], (-1,)).astype(jnp.float32)
    if tally is None:
        tally = {
            "sums": {name: jnp.zeros((), jnp.float32) for name in per_step},
            "first_bad": jnp.full((), -1, jnp.int32),
            "bad_value": jnp.zeros((), jnp.float32),
        }
    bad = ~jnp.isfinite(losses)
    first = jnp.argmax(bad)
    new_bad = (tally["first_bad"] < 0) & jnp.any(bad)
    return {
        "sums": {name: total + jnp.sum(per_step[name], dtype=jnp.float32) for name, total in tally["sums"].items()},
        "first_bad": jnp.where(new_bad, (step_after - length + 1 + first).astype(jnp.int32), tally["first_bad"]),
        "bad_value": jnp.where(new_bad, losses[first], tally["bad_value"]),
    }


_add_to_tally = jax.jit(_tally, static_argnums=3)


class _Prefetcher:
    """Builds and places batches on a host thread, so the next dispatches' batches are ready when the device is.

    ``take(step, length)`` returns the placed batches of steps ``step + 1 …
    step + length`` and queues the ones of the next ``ahead`` steps (at most
    up to ``last``). One worker thread: batches are built in step order, and a
    batch function that raises re-raises in ``take``.
    """

    def __init__(self, batches: BatchFn, sharding: jax.sharding.NamedSharding, last: int):
        self._place = lambda s: parallel.put_global_batch(batches(s), sharding)
        self._last = last
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="jaxlab-batches")
        self._futures: dict[int, concurrent.futures.Future] = {}

    def take(self, step: int, length: int, ahead: int) -> list[Any]:
        for s in range(step, min(step + length + ahead, self._last)):
            if s not in self._futures:
                self._futures[s] = self._pool.submit(self._place, s)
        return [self._futures.pop(s).result() for s in range(step, step + length)]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def mesh_for(config: TrainConfig) -> jax.sharding.Mesh:
    """The mesh of ``config``'s ``mesh`` shape over all devices (the strategy's default when it is ``""``)."""
    return parallel.make_mesh(config.strategy, shape=parallel.parse_mesh_spec(config.mesh) if config.mesh else None)


def _mesh_peak_tflops(mesh: jax.sharding.Mesh) -> float | None:
    """The peak TFLOP/s of all of ``mesh``'s devices, or None if their kind is not in :data:`jaxlab.train.throughput.TPU_PEAK_TFLOPS`/``GPU_PEAK_TFLOPS``."""
    devices = list(mesh.devices.flat)
    peak = throughput.peak_tflops(devices[0].device_kind)
    return None if peak is None else peak * len(devices)


def abstract_train_state(
    method: Any, optimizer: optax.GradientTransformation, batch: Batch, config: TrainConfig, mesh: jax.sharding.Mesh, frozen: Any = None
) -> tuple[TrainState, Any]:
    """Shapes and shardings of the state ``config`` builds, without computing it."""
    abstract = jax.eval_shape(lambda f: init_state(method, optimizer, batch, config.seed, f), frozen)
    shardings = parallel.state_shardings(abstract, mesh, config.strategy, min_shard_bytes=config.min_shard_bytes)
    with_shardings = jax.tree.map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), abstract, shardings)
    return with_shardings, shardings


def compile_train_step(
    method: Any, optimizer: optax.GradientTransformation, batch: Batch, config: TrainConfig, *, mesh: jax.sharding.Mesh | None = None
) -> jax.stages.Compiled:
    """The step :func:`train` runs, compiled for ``batch``'s shapes without running it (nothing is allocated).

    For reading what a configuration costs before launching it:
    ``.memory_analysis()``, ``.cost_analysis()``, or the collectives of
    ``.as_text()`` (:func:`jaxlab.testing.collectives`).
    """
    mesh = mesh_for(config) if mesh is None else mesh
    abstract, _ = abstract_train_state(method, optimizer, batch, config, mesh)
    step = _step_for(method, optimizer, config, mesh, abstract)
    sharding = parallel.batch_sharding(mesh)
    global_batch = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype, sharding=sharding), batch)
    return step.lower(abstract, global_batch, None).compile()


def restore_state(
    method: Any,
    optimizer: optax.GradientTransformation,
    batch: Batch,
    config: TrainConfig,
    workdir: str | Path,
    *,
    mesh: jax.sharding.Mesh | None = None,
) -> TrainState:
    """Loads the newest readable checkpoint of a run directory (for sampling and evaluation).

    Unreadable newer checkpoints are skipped with a warning and left as they
    are; the step loaded is logged (logger ``jaxlab.train``, level INFO).
    """
    mesh = mesh_for(config) if mesh is None else mesh
    abstract, _ = abstract_train_state(method, optimizer, batch, config, mesh)
    checkpointer = Checkpointer(Path(workdir) / "checkpoints", keep=config.keep_checkpoints)
    try:
        state = _restore_newest(checkpointer, abstract, set_aside=False)
    finally:
        checkpointer.close()
    log.info("loaded checkpoint step %d from %s", int(state.step), checkpointer.directory)
    return state


def restore_params(workdir: str | Path, *, ema: bool = True, sharding: jax.sharding.Sharding | None = None) -> Any:
    """The parameters of a run directory's newest readable checkpoint, read alone (for sampling and evaluation).

    Needs no method, optimizer, batch or configuration, unlike
    :func:`restore_state`: only what the checkpoint lists under ``ema_params``
    (or ``params`` with ``ema=False``) is read, as nested dicts (flax's
    parameter form), replicated on every device unless ``sharding`` places
    it otherwise. Unreadable newer checkpoints are skipped with a warning and
    left as they are.

    Raises:
      CheckpointError: ``workdir`` has no checkpoint, or none is readable.
    """
    field = "ema_params" if ema else "params"
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint found in {directory.absolute()}")
    if sharding is None:
        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("devices",)), jax.sharding.PartitionSpec())
    checkpointer = Checkpointer(directory)
    try:
        (step, params), skipped = checkpointer.newest_readable(lambda step: (step, checkpointer.restore_field(field, step, sharding)))
    finally:
        checkpointer.close()
    for error in skipped:
        _warn_fell_back(error, step, aftermath=" (nothing was changed)")
    log.info("loaded checkpoint step %d from %s (%s only)", step, checkpointer.directory, field)
    return params


def _warn_fell_back(error: UnreadableCheckpointError, step: int, *, aftermath: str) -> None:
    log.warning("%s; falling back to step %d, the newest readable checkpoint, which is intact%s", error, step, aftermath)


def _restore_newest(checkpointer: Checkpointer, abstract: TrainState, *, set_aside: bool) -> TrainState:
    """The newest readable checkpoint, warning about each unreadable newer one (moved aside if ``set_aside``)."""
    state, skipped = checkpointer.restore_newest_readable(abstract)
    for error in skipped:
        aftermath = f". The unreadable one was moved to {checkpointer.set_aside(error.step)}." if set_aside else " (nothing was changed)"
        _warn_fell_back(error, int(state.step), aftermath=aftermath)
    return state


def _resume_or_init(checkpointer, abstract, init):
    """The newest readable checkpoint (moving unreadable newer ones aside), or a fresh state."""
    if not checkpointer.all_steps():
        return init()
    state = _restore_newest(checkpointer, abstract, set_aside=True)
    log.info("resuming from checkpoint step %d in %s", int(state.step), checkpointer.directory)
    return state


def train(
    method: Any,
    optimizer: optax.GradientTransformation,
    batches: BatchFn,
    config: TrainConfig,
    workdir: str | Path,
    *,
    frozen: Any = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
    evaluate: EvalFn | None = None,
    evaluate_every: int | None = None,
) -> TrainState:
    """Trains ``method`` up to ``config.steps``, resuming from ``workdir`` if it has a checkpoint.

    Args:
      method: a method adapter (``init`` and ``loss``, or ``train_step``).
      optimizer: the optax optimizer (unused by methods with their own ``train_step``).
      batches: ``step -> host batch``; must be a pure function of the step.
      config: the trainer fields (steps, seed, checkpointing, strategy, …).
      workdir: the run directory (``checkpoints/``, ``metrics.jsonl``, ``loss.png``).
      frozen: trees the loss reads but never trains (a teacher).
      mesh: the device mesh; :func:`mesh_for` ``(config)`` by default.
      progress: show a tqdm progress bar.
      evaluate: optional ``state -> {name: scalar}``, called at every
        checkpoint step; its figures go into that step's ``metrics.jsonl``
        line as ``eval_<name>`` and into ``loss.png``. It must not change
        the state (it does not enter the training computation).
      evaluate_every: also call ``evaluate`` every this many steps (a
        multiple of ``config.log_every``); None: at checkpoint steps only.

    Returns:
      The final train state (sharded over ``mesh``).

    Raises:
      ValueError: a batch that does not divide over the devices (before
        anything is written).
      NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
      TrainingInterrupted: SIGINT/SIGTERM arrived (a checkpoint of the current step was written).
      CheckpointError: the run directory holds a foreign checkpoint, or none that is readable.
    """
    run = _Run.open(method, optimizer, batches, config, workdir, frozen=frozen, mesh=mesh, evaluate=evaluate, evaluate_every=evaluate_every)
    bar = tqdm(total=config.steps, initial=run.start, unit="step", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    try:
        with StopRequest() as stop, bar:
            run.advance(config.steps, stop, bar)
    finally:
        run.close()
    return run.state


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of :func:`train_arms`: a method, its optimizer, and what differs from the shared configuration.

    Attributes:
      method: a method adapter.
      optimizer: its optax optimizer.
      config: the arm's trainer config (None: the shared one); its
        ``steps``, ``log_every`` and ``checkpoint_every`` must equal the
        shared ones so the arms stay in lock-step.
      frozen: trees its loss reads but never trains.
      evaluate, evaluate_every: as in :func:`train`.
    """

    method: Any
    optimizer: optax.GradientTransformation
    config: TrainConfig | None = None
    frozen: Any = None
    evaluate: EvalFn | None = None
    evaluate_every: int | None = None


LOCKSTEP_FIELDS = ("steps", "log_every", "checkpoint_every")


def train_arms(
    arms: Mapping[str, Arm],
    batches: BatchFn,
    config: TrainConfig,
    workdir: str | Path,
    *,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
) -> dict[str, TrainState]:
    """Trains several arms in lock-step on the same batches, each in ``workdir/<name>`` with :func:`train`'s guarantees.

    The arms take turns, ``config.log_every`` steps each, so at any moment
    they have trained (nearly) equally long and their logged wall times are
    measured on the same machine state; a comparison is fair and a progress
    bar shows all of them. Each arm checkpoints and resumes on its own (a
    resumed run is bit-identical to an uninterrupted one); on SIGINT/SIGTERM
    every arm writes a checkpoint of its current step before
    :class:`TrainingInterrupted` is raised.

    Returns:
      ``{name: final train state}`` in the order of ``arms``.

    Raises:
      ValueError: no arms, a name that is not a plain directory name, or an
        arm config whose ``steps``/``log_every``/``checkpoint_every`` differ.
      NonFiniteLossError: an arm's loss became NaN/inf (its message names the arm).
      TrainingInterrupted, CheckpointError: as in :func:`train`.
    """
    if not arms:
        raise ValueError("arms must name at least one Arm, got none")
    for name, arm in arms.items():
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"arm names must be plain directory names, got {name!r}")
        if not isinstance(arm, Arm):
            raise TypeError(f"arms[{name!r}] must be an Arm, got {type(arm).__name__}")
        differing = [f for f in LOCKSTEP_FIELDS if arm.config is not None and getattr(arm.config, f) != getattr(config, f)]
        if differing:
            raise ValueError(
                f"arms[{name!r}].config must keep the shared {', '.join(differing)} (lock-step), got {[getattr(arm.config, f) for f in differing]}"
            )
    runs: dict[str, _Run] = {}
    try:
        for name, arm in arms.items():
            runs[name] = _Run.open(
                arm.method,
                arm.optimizer,
                batches,
                arm.config or config,
                Path(workdir) / name,
                frozen=arm.frozen,
                mesh=mesh,
                evaluate=arm.evaluate,
                evaluate_every=arm.evaluate_every,
            )
        total = config.steps * len(runs)
        bar = tqdm(total=total, initial=sum(r.start for r in runs.values()), unit="step", disable=not progress, dynamic_ncols=True, mininterval=0.5)
        with StopRequest() as stop, bar:
            for boundary in range(config.log_every, config.steps + config.log_every, config.log_every):
                for name, run in runs.items():
                    bar.set_description(name)
                    try:
                        run.advance(min(boundary, config.steps), stop, bar)
                    except NonFiniteLossError as error:
                        error.args = (f"arm {name!r}: {error.args[0]}",)
                        raise
                    except TrainingInterrupted:
                        for other in runs.values():
                            other.save()
                        raise
    finally:
        for run in runs.values():
            run.close()
    return {name: run.state for name, run in runs.items()}


@dataclasses.dataclass
class _Run:
    """One method's training in ``workdir``: its state, compiled step, checkpoints and log, advanced in stretches."""

    state: TrainState
    start: int
    method: Any
    optimizer: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    abstract: TrainState
    batches: BatchFn
    batch_sharding: jax.sharding.NamedSharding
    frozen: Any
    config: TrainConfig
    workdir: Path
    checkpointer: Checkpointer
    log_file: MetricsLog
    evaluate: EvalFn | None
    evaluate_every: int | None
    step_fns: dict[int, Any] = dataclasses.field(default_factory=dict)  # by steps per dispatch
    compiled: set[int] = dataclasses.field(default_factory=set)
    tally: dict | None = None  # on the device: metric sums and the first non-finite loss since the last log line
    tallied_steps: int = 0
    prefetcher: _Prefetcher | None = None
    interval_seconds: float = 0.0
    compile_seconds: float = 0.0
    batch_size: int | None = None  # the global batch's examples, for examples_per_sec
    tokens_per_example: int | None = None  # a language model's, for tokens_per_sec
    flops_per_step: float | None = None  # of one step, summed over the devices; read at the first compilation
    peak_tflops: float | None = None  # of the mesh's devices together, None for a device kind not in the table

    @classmethod
    def open(cls, method, optimizer, batches, config, workdir, *, frozen, mesh, evaluate, evaluate_every=None) -> _Run:
        """Builds or resumes the state; raises on a bad batch size or evaluation interval before anything is written."""
        workdir = Path(workdir)
        if evaluate_every is not None and (not isinstance(evaluate_every, int) or evaluate_every < 1 or evaluate_every % config.log_every):
            raise ValueError(f"evaluate_every must be a positive multiple of log_every ({config.log_every}) or None, got {evaluate_every!r}")
        mesh = mesh_for(config) if mesh is None else mesh
        batch_sharding = parallel.batch_sharding(mesh)
        # Placed (lazy leaves such as jaxlab.data.ImageRows reach init as arrays); raises on a bad batch size before any write.
        first_batch = parallel.put_global_batch(batches(0), batch_sharding)
        abstract, shardings = abstract_train_state(method, optimizer, first_batch, config, mesh, frozen)
        if is_writer():
            workdir.mkdir(parents=True, exist_ok=True)
        checkpointer = Checkpointer(workdir / "checkpoints", keep=config.keep_checkpoints)
        metrics_log = MetricsLog(workdir / "metrics.jsonl")
        init = jax.jit(lambda b, f: init_state(method, optimizer, b, config.seed, f), out_shardings=shardings)
        try:
            state = _resume_or_init(checkpointer, abstract, lambda: init(first_batch, frozen))
        except BaseException:
            checkpointer.close()
            raise
        start = int(state.step)
        metrics_log.truncate_after(start)
        write_json_atomic(workdir / "trainer.json", {"devices": len(mesh.devices.flat), "mesh": dict(mesh.shape)})
        return cls(
            state,
            start,
            method,
            optimizer,
            mesh,
            abstract,
            batches,
            batch_sharding,
            frozen,
            config,
            workdir,
            checkpointer,
            metrics_log,
            evaluate,
            evaluate_every,
            batch_size=throughput.batch_size(first_batch),
            tokens_per_example=throughput.tokens_per_example(first_batch),
            peak_tflops=_mesh_peak_tflops(mesh),
        )

    def advance(self, until: int, stop: StopRequest, bar: Any) -> None:
        """Steps ``state.step + 1 … until``: log, checkpoint, evaluate, honour signals, stop on a non-finite loss.

        Steps are dispatched ``config.steps_per_execution`` at a time (fewer
        up to the next log or checkpoint step). Metrics and the finite check
        accumulate on the device (:func:`_tally`); the host fetches them only
        at log and checkpoint steps and at ``until``, before anything is
        written, so between them it only queues work. Compilation, evaluation
        and checkpoint writes are not counted in ``steps_per_sec``.
        """
        config = self.config
        resumed = time.perf_counter()
        step = int(self.state.step)
        while step < until:
            length = self._stretch(step, until)
            batch = self._batches(step, length)
            resumed += self._compile_once(length, batch)
            self.state, metrics = self._step_fn(length)(self.state, batch, self.frozen)
            self.tally = _add_to_tally(self.tally, metrics, self.state.step, length)
            self.tallied_steps += length
            step += length
            periodic_save = step % config.checkpoint_every == 0 or step == config.steps
            signum = _agreed_signal(stop, at_check=step % config.log_every == 0 or periodic_save or step == until)
            must_save = periodic_save or signum is not None
            log_now = step % config.log_every == 0 or must_save
            if log_now or step == until:
                means = self._check()
            if log_now:
                seconds = self.interval_seconds + time.perf_counter() - resumed
                record = {"step": step, **means, "steps_per_sec": self.tallied_steps / max(seconds, 1e-9)}
                record.update(self._throughput(record["steps_per_sec"]))
                if self.compile_seconds:
                    record["compile_seconds"] = self.compile_seconds
                evaluate_now = must_save or (self.evaluate_every is not None and step % self.evaluate_every == 0)
                if self.evaluate is not None and evaluate_now and signum is None:
                    record.update({f"eval_{k}": float(v) for k, v in self.evaluate(self.state).items()})
                self.interval_seconds, self.compile_seconds, self.tally, self.tallied_steps = 0.0, 0.0, None, 0
                self.log_file.append(record)
                bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            bar.update(length)
            if must_save:
                self.checkpointer.save(self.state)
            if log_now:
                resumed = time.perf_counter()  # evaluation and checkpoint writes are not training time
            if signum is not None:
                raise TrainingInterrupted(signum, step)
        self.interval_seconds += time.perf_counter() - resumed  # an interval split between turns counts only this run's time

    def _stretch(self, step: int, until: int) -> int:
        """Steps in the next dispatch: ``steps_per_execution``, cut at the next log or checkpoint step and at ``until``."""
        config = self.config
        next_event = min(until, config.steps, *(step + every - step % every for every in (config.log_every, config.checkpoint_every)))
        return min(config.steps_per_execution, next_event - step)

    def _batches(self, step: int, length: int) -> Any:
        """The placed batch of step ``step + 1`` (``length`` 1), or the tuple of the next ``length``; two dispatches more are queued."""
        if self.prefetcher is None:
            self.prefetcher = _Prefetcher(self.batches, self.batch_sharding, self.config.steps)
        placed = tuple(self.prefetcher.take(step, length, ahead=2 * length))
        return placed[0] if length == 1 else placed

    def _step_fn(self, length: int) -> Any:
        if length not in self.step_fns:
            self.step_fns[length] = _step_for(self.method, self.optimizer, self.config, self.mesh, self.abstract, length=length)
        return self.step_fns[length]

    def _compile_once(self, length: int, batch: Any) -> float:
        """Compiles the step of ``length`` before its first run (cached: the call reuses it); returns the seconds spent."""
        if length in self.compiled:
            return 0.0
        start = time.perf_counter()
        compiled = self._step_fn(length).lower(self.state, batch, self.frozen).compile()
        if not self.compiled:  # XLA counts a scan's body once, so the FLOPs of one step are read from the step of length 1
            single = compiled if length == 1 else self._step_fn(1).lower(self.state, batch[0], self.frozen).compile()
            self.compiled.add(1)
            per_device = throughput.flops(single)  # what one device runs, after partitioning
            self.flops_per_step = None if per_device is None else per_device * self.mesh.devices.size
        seconds = time.perf_counter() - start
        self.compiled.add(length)
        self.compile_seconds += seconds
        return seconds

    def _throughput(self, steps_per_sec: float) -> dict[str, float]:
        """The log line's throughput entries (:mod:`jaxlab.train.throughput`), from host-side figures alone."""
        record = throughput.throughput(
            steps_per_sec,
            batch_size=self.batch_size,
            flops_per_step=self.flops_per_step,
            peak_tflops=self.peak_tflops,
            tokens_per_example=self.tokens_per_example,
        )
        memory = throughput.peak_memory_gib(d for d in self.mesh.devices.flat if d.process_index == jax.process_index())
        return record if memory is None else {**record, "peak_memory_gib": memory}

    def _check(self) -> dict[str, float]:
        """Fetches the tally (the host's only wait): raises at the first non-finite loss, else returns the metric means."""
        host = jax.device_get(self.tally)
        if int(host["first_bad"]) >= 0:
            raise NonFiniteLossError(int(host["first_bad"]), float(host["bad_value"]), self.checkpointer.latest_step())
        return {name: float(total) / max(self.tallied_steps, 1) for name, total in host["sums"].items()}

    def save(self) -> None:
        """A checkpoint of the current step (a no-op if it is saved already)."""
        self.checkpointer.save(self.state)

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
        self.checkpointer.close()
        if is_writer() and self.log_file.path.exists():
            plot_metrics(self.log_file.read(), self.workdir / "loss.png")


def _agreed_signal(stop: StopRequest, *, at_check: bool) -> int | None:
    """The signal that stops training after this step on every process, or ``None``.

    One process honours its own signal after any step. Several processes must
    all checkpoint the same step (the write is collective), but a signal may
    reach only one of them (a preempted host): they agree at the steps where
    every process fetches its tally anyway (log and checkpoint steps, and
    the end of an ``advance``), by gathering each one's signal number.
    """
    if jax.process_count() == 1:
        return stop.signum
    if not at_check:
        return None
    received = multihost_utils.process_allgather(np.int32(stop.signum or 0))  # (num_processes,)
    return int(np.max(received)) or None


def _step_for(
    method: Any, optimizer: optax.GradientTransformation, config: TrainConfig, mesh: jax.sharding.Mesh, abstract: TrainState, *, length: int = 1
) -> Any:
    """The jitted step of ``config``'s EMA and strategy for a state laid out as ``abstract``.

    With ``length`` > 1, ``length`` steps in one ``lax.scan``: it takes a
    tuple of that many batches and returns every metric stacked ``(length,)``.
    """
    ema = (config.ema_decay, getattr(config, "ema_warmup", True))
    layout = (config.strategy, config.min_shard_bytes)
    return _jitted_train_step(method, optimizer, ema, mesh, layout, _signature(abstract), length)


def _signature(abstract: TrainState) -> tuple:
    """A hashable description of a state's structure, shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(abstract)
    return treedef, tuple((leaf.shape, leaf.dtype) for leaf in leaves)


@functools.lru_cache(maxsize=16)
def _jitted_train_step(method, optimizer, ema, mesh, layout, signature, length):
    """One jitted step per (method, optimizer, EMA, mesh, state layout), reused across ``train`` calls.

    Reusing the jitted function lets JAX reuse its compilation when a process
    trains the same model again (resuming in a notebook, tests).
    """
    ema_decay, ema_warmup = ema
    treedef, leaves = signature
    abstract = jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in leaves])
    strategy, min_shard_bytes = layout
    shardings = parallel.state_shardings(abstract, mesh, strategy, min_shard_bytes=min_shard_bytes)
    step = functools.partial(train_step, method, optimizer, ema_decay, ema_warmup=ema_warmup)

    def steps(state: TrainState, batch: Batch, frozen: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        if length == 1:
            return step(state, batch, frozen)
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *batch)  # (length, batch, ...)
        return jax.lax.scan(lambda carry, one: step(carry, one, frozen), state, stacked)

    def constrained_step(state: TrainState, batch: Batch, frozen: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        # Traced under the mesh and the activation rules: the networks' logical names become sharding constraints.
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(parallel.activation_rules()):
            return steps(state, batch, frozen)

    return jax.jit(constrained_step, out_shardings=(shardings, parallel.replicated(mesh)), donate_argnums=0)
