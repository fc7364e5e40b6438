"""One contract, one battery: every method adapter of jaxlab.generative and jaxlab.tasks on a tiny network.

Each case builds an adapter over a tiny network and draws batches of 8; the
tests check the trainer's view of the contract in :mod:`jaxlab.base`: init,
a jitted finite loss and gradient, the own ``train_step`` hook, sampling,
log-likelihoods, and that new keys, batches and steps of one shape trace
once. Every compiled function is built once per case (``functools.cache``)
and shared by the tests; the training step the trainer would jit (the
loss's ``value_and_grad``, or the method's ``train_step``) is compiled once
under a retrace guard and called three times.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxlab import generative, tasks
from jaxlab.base import Context, Method, OwnTrainStep
from jaxlab.nn import CausalTransformer, ClassifierMLP, TimeMLP
from jaxlab.nn.attention import AttentionConfig
from jaxlab.nn.transformer import TransformerConfig
from jaxlab.testing import clear_trace_counter, jit_with_max_traces

BATCH, NUM_SAMPLES, CLASSES, DIM = 8, 5, 3, 2
STEPS = 3


@dataclasses.dataclass(frozen=True)
class Case:
    """An adapter, its batches and what else its loss needs.

    Attributes:
      name: the test id.
      method: the adapter over a tiny network.
      batch: ``batch(rng) -> Batch`` of BATCH examples, the same shapes for every generator.
      teacher: ``teacher(key) -> params`` passed as ``ctx.frozen``, or None.
      sample_steps: ``steps`` of :meth:`sample`.
      log_prob_kwargs: extra (tuning) arguments of ``log_prob``.
    """

    name: str
    method: Any
    batch: Callable[[np.random.Generator], dict[str, jax.Array]]
    teacher: Callable[[jax.Array], Any] | None = None
    sample_steps: int = 2
    log_prob_kwargs: tuple[tuple[str, Any], ...] = ()


def _normal(rng, *shape):
    return jnp.asarray(rng.standard_normal(shape, np.float32))


def _ints(rng, high, *shape):
    return jnp.asarray(rng.integers(0, high, shape, np.int32))


def _vectors(rng):
    return {"x": _normal(rng, BATCH, DIM)}


def _labelled(rng):
    return {**_vectors(rng), "label": _ints(rng, CLASSES, BATCH)}


def _couplings(rng):
    return {"x0": _normal(rng, BATCH, DIM), "x1": _normal(rng, BATCH, DIM)}


def _tokens(rng):
    return {"tokens": _ints(rng, 16, BATCH, 9)}


def _classified(*shape):
    def batch(rng):
        return {"x": _normal(rng, BATCH, *shape), "y": _ints(rng, CLASSES, BATCH)}

    return batch


def _weighted(rng):
    return {"x": _normal(rng, BATCH, 4, DIM), "y": _normal(rng, BATCH, 4), "w": jnp.asarray(rng.uniform(0.1, 1.0, (BATCH, 4)), jnp.float32)}


def _time_mlp(**fields):
    return TimeMLP(width=16, depth=1, time_features=8, **fields)


def _teacher(key):
    return _time_mlp().init(key, jnp.zeros((BATCH, DIM)), jnp.zeros(BATCH))


class _SequenceNet(nn.Module):
    """``(B, L) -> (B, classes)`` logits: a per-position layer, dropout, mean pooling, a linear head."""

    @nn.compact
    def __call__(self, x, *, deterministic=True):
        h = nn.Dropout(0.5)(nn.relu(nn.Dense(8)(x[..., None])), deterministic=deterministic)
        return nn.Dense(CLASSES)(jnp.mean(h, axis=1))


class _Regressor(nn.Module):
    """``(B, L, d_in) -> (B, L)``: one linear layer."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(x)[..., 0]


def _vector_fields():
    net = _time_mlp()
    return dict(apply_fn=net.apply, init_fn=net.init, data_shape=(DIM,))


def _labelled_diffusion():
    net = _time_mlp(num_classes=CLASSES)
    return generative.Diffusion(
        apply_fn=lambda p, x, t, labels: net.apply(p, x, t, labels=labels),
        init_fn=lambda k, x, t, labels: net.init(k, x, t, labels=labels),
        data_shape=(DIM,),
        num_classes=CLASSES,
    )


def _labelled_shortcut():
    net = _time_mlp(num_classes=CLASSES, separate_conditions=True)
    return generative.Shortcut(apply_fn=net.apply, init_fn=net.init, data_shape=(DIM,), num_classes=CLASSES)


def _tarflow(num_classes=0):
    net = CausalTransformer(out_features=2, max_len=DIM, width=16, depth=1, num_heads=2, num_classes=num_classes)
    return generative.TarFlow(net.apply, net.init, data_shape=(DIM,), num_blocks=2, num_classes=num_classes)


def _ign():
    net = _time_mlp()
    return generative.IGN(
        apply_fn=lambda p, x: net.apply(p, x, jnp.ones(x.shape[:1])),
        init_fn=lambda k, x: net.init(k, x, jnp.ones(x.shape[:1])),
        data_shape=(DIM,),
    )


def _language_model():
    config = TransformerConfig(attention=AttentionConfig(num_heads=2, head_dim=8), vocab_size=16, d_model=16, num_layers=1, d_ff=32)
    return tasks.LanguageModel(config)


def _sequence_classifier():
    return tasks.SequenceClassifier(apply_fn=_SequenceNet().apply, init_fn=_SequenceNet().init, dropout=0.5)


def _classifier():
    net = ClassifierMLP(width=16, depth=1, num_classes=CLASSES)
    return tasks.Classifier(apply_fn=net.apply, init_fn=net.init)


def _full_fine_tune():
    return tasks.FineTune(_classifier(), lambda trainable, base: trainable)


def _fine_tune_start(key):
    return {"base": {}, "start": _classifier().init(key, _classified(DIM)(np.random.default_rng(0)))}


CASES = (
    Case("rectified_flow", generative.RectifiedFlow(**_vector_fields()), _vectors),
    Case("diffusion", generative.Diffusion(**_vector_fields()), _vectors, log_prob_kwargs=(("steps", 4),)),
    Case("diffusion_labels", _labelled_diffusion(), _labelled, log_prob_kwargs=(("steps", 4),)),
    Case("tarflow", _tarflow(), _vectors),
    Case("tarflow_labels", _tarflow(CLASSES), _labelled),
    Case("reflow", generative.ReFlow(**_vector_fields()), _couplings),
    Case("consistency_training", generative.ConsistencyTraining(**_vector_fields(), total_steps=100, optimizer=optax.adam(1e-3)), _vectors),
    Case("improved_consistency_training", generative.ImprovedConsistencyTraining(**_vector_fields(), total_steps=100), _vectors),
    Case(
        "consistency_distillation",
        generative.ConsistencyDistillation(**_vector_fields(), teacher_apply_fn=_time_mlp().apply),
        _vectors,
        teacher=_teacher,
    ),
    Case("shortcut", generative.Shortcut(**_vector_fields()), _vectors),
    Case("shortcut_labels", _labelled_shortcut(), _labelled),
    Case("sid", generative.SiD(**_vector_fields()), _vectors, teacher=_teacher, sample_steps=1),
    Case("ign", _ign(), _vectors),
    Case("language_model", _language_model(), _tokens),
    Case("classifier", _classifier(), _classified(DIM)),
    Case("sequence_classifier", _sequence_classifier(), _classified(8)),
    Case("fine_tune", _full_fine_tune(), _classified(DIM), teacher=_fine_tune_start),
    Case("weighted_regression", tasks.WeightedRegression(apply_fn=_Regressor().apply, init_fn=_Regressor().init), _weighted),
)
BY_NAME = {case.name: case for case in CASES}


def samples(case: Case) -> bool:
    return callable(getattr(case.method, "sample", None))


def has_log_prob(case: Case) -> bool:
    return callable(getattr(case.method, "log_prob", None))


def own_train_step(case: Case) -> bool:
    return callable(getattr(case.method, "train_step", None))


def cases(keep: Callable[[Case], bool] = lambda case: True) -> list[str]:
    """The names of the cases ``keep`` selects."""
    return [case.name for case in CASES if keep(case)]


def perturbed(params, seed: int, scale: float = 0.1):
    """The parameters moved off their zero-output heads (on the host), so every network is a non-trivial map."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: jnp.asarray(np.asarray(a) + scale * rng.standard_normal(a.shape, np.float32)), params)


def batch(case: Case, seed: int):
    return case.batch(np.random.default_rng(seed))


@functools.cache
def teacher_params(name: str):
    return perturbed(BY_NAME[name].teacher(jax.random.key(1)), seed=1)


def context(case: Case, params, step: int) -> Context:
    frozen = None if case.teacher is None else teacher_params(case.name)
    return Context(step=jnp.asarray(step, jnp.int32), ema_params=params, frozen=frozen)


@functools.cache
def initialized(name: str):
    """``(init's params, perturbed params)`` of a case."""
    params = BY_NAME[name].method.init(jax.random.key(0), batch(BY_NAME[name], 0))
    return params, perturbed(params, seed=2)


def loss_step(case: Case) -> Callable:
    """``(params, state, batch, key, ctx) -> (params, state, ((loss, metrics), grads))``."""

    def loss(params, batch, key, ctx):
        return case.method.loss(params, batch, key=key, ctx=ctx)

    def step(params, state, batch, key, ctx):
        return params, state, jax.value_and_grad(loss, has_aux=True)(params, batch, key, ctx)

    return step


def training_step(case: Case) -> Callable:
    """What the trainer jits: the method's ``train_step``, or :func:`loss_step`."""
    if not own_train_step(case):
        return loss_step(case)

    def step(params, state, batch, key, ctx):
        return case.method.train_step(params, state, batch, key=key, ctx=ctx)

    return step


@functools.cache
def three_steps(name: str):
    """The guarded, jitted training step called STEPS times on new keys, batches and steps: ``(calls, retrace error)``.

    Each call is ``(params in, params out, out)``; ``out`` is ``((loss, metrics), grads)``, or ``train_step``'s metrics.
    """
    case = BY_NAME[name]
    params = initialized(name)[1]
    state = case.method.init_opt_state(params) if own_train_step(case) else None
    clear_trace_counter()
    step = jit_with_max_traces(training_step(case), n=1)
    calls = []
    for i in range(STEPS):
        try:
            new, state, out = step(params, state, batch(case, 10 + i), jax.random.key(10 + i), context(case, params, i))
        except AssertionError as error:
            return calls, error
        calls.append((params, new, out))
        params = new
    return calls, None


@functools.cache
def loss_and_grad(name: str):
    """``((loss, metrics), grads)`` of the jitted loss at the perturbed parameters."""
    case = BY_NAME[name]
    if not own_train_step(case):
        return three_steps(name)[0][0][2]
    params = initialized(name)[1]
    return jax.jit(loss_step(case))(params, None, batch(case, 3), jax.random.key(3), context(case, params, 3))[2]


def finite(tree) -> bool:
    return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


def assert_finite_scalars(metrics):
    assert isinstance(metrics, dict), f"metrics must be a dict, got {type(metrics).__name__}"
    for name, value in metrics.items():
        assert jnp.shape(value) == (), f"metric {name!r} has shape {jnp.shape(value)}"
        assert np.isfinite(np.asarray(value)), f"metric {name!r} is {value}"


def moved(before, after) -> bool:
    return any(np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))


def test_every_adapter_class_has_a_case():
    """Each class of jaxlab.generative and jaxlab.tasks with ``init`` and ``loss`` is in the table."""
    exported = [getattr(module, name) for module in (generative, tasks) for name in module.__all__]
    adapters = {c for c in exported if isinstance(c, type) and callable(getattr(c, "init", None)) and callable(getattr(c, "loss", None))}
    assert adapters - {type(case.method) for case in CASES} == set()


@pytest.mark.parametrize("name", cases())
def test_adapter_satisfies_the_protocols_it_claims(name):
    """A sampling adapter is a ``Method``, one with ``train_step`` an ``OwnTrainStep``."""
    case = BY_NAME[name]
    assert isinstance(case.method, Method) == samples(case)
    assert isinstance(case.method, OwnTrainStep) == own_train_step(case)


@pytest.mark.parametrize("name", cases())
def test_init_returns_float32_params(name):
    """``init(key, batch)`` is a non-empty pytree of float32 arrays."""
    leaves = jax.tree.leaves(initialized(name)[0])
    assert leaves
    assert all(isinstance(leaf, jax.Array) and leaf.dtype == jnp.float32 for leaf in leaves), {leaf.dtype for leaf in leaves}


@pytest.mark.parametrize("name", cases())
def test_jitted_loss_is_a_finite_float32_scalar_with_finite_scalar_metrics(name):
    """The jitted loss is a finite float32 scalar; its metrics dict holds finite scalars."""
    (loss, metrics), _ = loss_and_grad(name)
    assert loss.shape == () and loss.dtype == jnp.float32
    assert np.isfinite(float(loss))
    assert_finite_scalars(metrics)


@pytest.mark.parametrize("name", cases())
def test_loss_gradient_is_finite_and_not_all_zero(name):
    """The gradient of the loss has the parameters' structure, is finite everywhere and is not all zero."""
    _, grads = loss_and_grad(name)
    assert jax.tree.structure(grads) == jax.tree.structure(initialized(name)[1])
    assert finite(grads)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("name", cases(own_train_step))
def test_own_train_step_moves_every_network_to_finite_params(name):
    """One jitted ``train_step`` keeps the params' structure and dtypes, stays finite and moves each top-level network."""
    (before, after, metrics), *_ = three_steps(name)[0]
    assert jax.tree.structure(after) == jax.tree.structure(before)
    assert [a.dtype for a in jax.tree.leaves(after)] == [b.dtype for b in jax.tree.leaves(before)]
    assert finite(after)
    assert [network for network in before if not moved(before[network], after[network])] == []
    assert_finite_scalars(metrics)


@pytest.mark.parametrize("name", cases(samples))
def test_jitted_samples_have_the_data_shape_and_are_finite(name):
    """``sample(params, key=…, num=N, steps=k)`` under jit is finite with shape (N, *data_shape)."""
    case = BY_NAME[name]
    draw = jax.jit(lambda params, key: case.method.sample(params, key=key, num=NUM_SAMPLES, steps=case.sample_steps))
    x = draw(initialized(name)[1], jax.random.key(7))
    assert x.shape == (NUM_SAMPLES, *case.method.data_shape)
    assert finite(x)


@pytest.mark.parametrize("name", cases(has_log_prob))
def test_log_prob_is_finite_with_one_value_per_example(name):
    """``log_prob(params, x)`` under jit is finite with shape (N,)."""
    case = BY_NAME[name]
    x = _normal(np.random.default_rng(8), NUM_SAMPLES, *case.method.data_shape)
    log_prob = jax.jit(lambda params, x: case.method.log_prob(params, x, **dict(case.log_prob_kwargs)))
    value = log_prob(initialized(name)[1], x)
    assert value.shape == (NUM_SAMPLES,)
    assert finite(value)


@pytest.mark.parametrize("name", cases())
def test_training_step_traces_once_for_new_keys_batches_and_steps(name):
    """STEPS calls of the jitted training step (state threaded through) with new keys, batches and steps trace once."""
    calls, error = three_steps(name)
    assert error is None, error
    assert len(calls) == STEPS
    assert all(finite(out) for _, _, out in calls)
