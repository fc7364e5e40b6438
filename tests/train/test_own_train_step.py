"""A method with its own ``train_step`` (several networks, several optimizers) goes through the same loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlab.train import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class AlternatingMeans:
    """Two scalars fitted in turn: ``a`` to the batch mean, then ``b`` to ``a`` — each with its own SGD."""

    rate_a: float = 0.5
    rate_b: float = 0.25

    def optimizers(self):
        return optax.sgd(self.rate_a), optax.sgd(self.rate_b)

    def init(self, key, batch):
        del key, batch
        return {"a": jnp.zeros(()), "b": jnp.zeros(())}

    def init_opt_state(self, params):
        opt_a, opt_b = self.optimizers()
        return {"a": opt_a.init(params["a"]), "b": opt_b.init(params["b"])}

    def train_step(self, params, opt_state, batch, *, key, ctx):
        del key
        opt_a, opt_b = self.optimizers()
        opt_state = dict(opt_state)
        loss_a, grad_a = jax.value_and_grad(lambda a: 0.5 * (a - jnp.mean(batch["x"])) ** 2)(params["a"])
        update, opt_state["a"] = opt_a.update(grad_a, opt_state["a"])
        params = {**params, "a": params["a"] + update}
        grad_b = jax.grad(lambda b: 0.5 * (b - params["a"]) ** 2)(params["b"])
        update, opt_state["b"] = opt_b.update(grad_b, opt_state["b"])
        params = {**params, "b": params["b"] + update}
        return params, opt_state, {"loss": loss_a, "step_seen": ctx.step}


def test_own_train_step_runs_alternating_updates_with_ema_and_resume(tmp_path):
    config = TrainConfig(steps=30, batch_size=8, checkpoint_every=10, log_every=5, warmup_steps=0, ema_decay=0.5)

    def batches(step):
        return {"x": np.full((8, 1), 2.0, np.float32)}

    method = AlternatingMeans()
    unused_optimizer = optax.identity()
    state = train(method, unused_optimizer, batches, dataclasses.replace(config, steps=15), tmp_path, progress=False)
    state = train(method, unused_optimizer, batches, config, tmp_path, progress=False)

    a, b = float(state.params["a"]), float(state.params["b"])
    a_expected, b_expected = 0.0, 0.0
    for _ in range(config.steps):  # the same recursion by hand
        a_expected += 0.5 * (2.0 - a_expected)
        b_expected += 0.25 * (a_expected - b_expected)
    np.testing.assert_allclose([a, b], [a_expected, b_expected], rtol=1e-6)
    assert int(state.step) == 30
    assert 0.0 < float(state.ema_params["b"]) < b  # the loop keeps the EMA for such methods too
