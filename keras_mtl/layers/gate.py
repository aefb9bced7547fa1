"""Gating networks over a set of experts: softmax (MMoE, PLE) and DSelect-k (Hazimeh et al.)."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops


class MixtureGate(keras.layers.Layer):
    """A gate: expert weights `w(x)` `[batch, num_experts]` and the mixture `Σ_e w_e f_e`.

    Subclasses implement `expert_weights(selector)`. `call(selector, experts)` takes the selector
    input `[batch, d]` and stacked expert outputs `[batch, num_experts, units]`; it returns
    `(mixture [batch, units], weights [batch, num_experts])`.
    """

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(**kwargs)
        if num_experts < 1:
            raise ValueError(f"num_experts must be >= 1, got {num_experts}.")
        self.num_experts = int(num_experts)

    def expert_weights(self, selector):
        raise NotImplementedError

    def call(self, selector, experts, detached=None):
        weights = self.expert_weights(selector)
        if detached is None:
            return ops.einsum("be,bed->bd", weights, experts), weights
        own = 0 if experts is None else int(experts.shape[1])
        detached_weights = weights[:, own:]
        term = ops.einsum("be,bed->bd", detached_weights, ops.stop_gradient(detached))
        mixture = term if experts is None else (
            ops.einsum("be,bed->bd", weights[:, :own], experts) + term)
        return mixture, weights, detached_weights, term

    def detached_mixture(self, selector, experts, detached):
        """The mixture over `experts` (may be None) followed by `detached` experts, with the
        `detached` ones read through a stop-gradient: `(mixture, weights, detached weights,
        detached term)`, where `detached term = Σ_e w_e detached_e` is the only path from
        `detached` to the mixture (for `Backbone.factored_heads`)."""
        # Through __call__, so that a gate with a layer loss (DSelect-k) replaces the loss of its
        # previous call instead of adding to it.
        return self(selector, experts, detached=detached)

    def get_config(self):
        config = super().get_config()
        config["num_experts"] = self.num_experts
        return config


@keras.saving.register_keras_serializable(package="keras_mtl")
class Gate(MixtureGate):
    """`g(x) = softmax(W x)` (MMoE eq. 7, PLE eq. 4) and the gated mixture `Σ_i g(x)_i f_i(x)`."""

    def __init__(self, num_experts: int, **kwargs):
        super().__init__(num_experts, **kwargs)
        self.dense = keras.layers.Dense(self.num_experts, name="logits")

    def build(self, selector_shape, experts_shape=None, detached_shape=None):
        self.dense.build(selector_shape)

    def expert_weights(self, selector):
        return ops.softmax(self.dense(selector), axis=-1)


def smooth_step(t, gamma: float):
    """DSelect-k's smooth-step (Hazimeh et al. 2021, §3; Hazimeh et al. 2020, arXiv 2002.07772):
    0 for t ≤ −γ/2, 1 for t ≥ γ/2, and `−2t³/γ³ + 3t/(2γ) + 1/2` between — continuously
    differentiable, and exactly 0 or 1 outside the band, so a selector can become binary."""
    cubic = -2.0 / gamma**3 * t**3 + 3.0 / (2.0 * gamma) * t + 0.5
    return ops.where(t <= -gamma / 2, ops.zeros_like(t),
                     ops.where(t >= gamma / 2, ops.ones_like(t), cubic))


@keras.saving.register_keras_serializable(package="keras_mtl")
class DSelectGate(MixtureGate):
    """DSelect-k: a differentiable gate that selects at most `top_k` of `n` experts.

    Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts with
    Applications to Multi-Task Learning", NeurIPS 2021 (arXiv 2106.03760), §3. With
    `m = ⌈log₂ n⌉` bits and `S` the smooth-step (`smooth_step`, parameter `gamma`):

    - single-expert selector: `r(z)_l = Π_{j=1}^{m} S(z_j)^{[b_l,j = 1]} (1 − S(z_j))^{[b_l,j = 0]}`
      for `z ∈ R^m`, where `b_l` is the binary code of expert l (most significant bit first). When
      every `S(z_j) ∈ {0, 1}`, r is one-hot: the selector has picked one expert.
    - the gate combines k selectors: `q(α, Z) = Σ_{i=1}^{k} softmax(α)_i r(z^{(i)})`, so it gives
      non-zero weight to at most k experts once the selectors are binary;
    - per-example gating (`per_example=True`, the form used in place of MMoE's `softmax(W x)`):
      `z^{(i)} = W^{(i)} x + b^{(i)}` and `α = G x + c`; static gating: `Z` and `α` are weights;
    - the entropy regulariser `Ω(Z) = Σ_i h(r(z^{(i)}))`, `h(p) = −Σ_l p_l log p_l`, which is
      zero exactly at binary selectors and pushes them there; `entropy_weight` is its λ.

    Choices the paper leaves open, as the official code (google-research/dselect_k_moe) makes
    them unless said otherwise:

    - `n` not a power of two: only the codes of the n experts are kept, so a selector's weights
      sum to ≤ 1 until it binarises on a reachable code, and (as in the official code, with
      weight 1) the penalty `Σ_i (1 / Σ_l r(z^{(i)})_l − 1)` keeps selectors off the unreachable
      codes (the official code omits the `− 1`, a constant). For `n` a power of two the weights
      always sum to 1.
    - initialisation: `z` uniform in ±γ/100 (every selector starts in the smooth band), `α`
      uniform in ±0.05 (Keras' `RandomUniform` default).
    - per example, both penalties are averaged over the batch (the official code sums them over
      the batch, which ties λ to the batch size).
    - the penalties are computed on a stop-gradient copy of the selector input `x`: Ω is a
      function of the gate's parameters (`Z` in the paper), so it trains only the gate and never
      the shared representation that feeds it. They enter through `add_loss` (weight 1 each,
      `entropy_weight` inside); `MultiTaskModel` adds their gradient once, outside the balancer
      (see `MultiTaskModel.forward`).
    """

    def __init__(self, num_experts: int, top_k: int = 2, gamma: float = 1.0,
                 entropy_weight: float = 0.0, per_example: bool = True, **kwargs):
        super().__init__(num_experts, **kwargs)
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}.")
        if gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {gamma}.")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}.")
        self.top_k = int(top_k)
        self.gamma = float(gamma)
        self.entropy_weight = float(entropy_weight)
        self.per_example = bool(per_example)
        self.num_bits = max(1, math.ceil(math.log2(self.num_experts)))
        self.power_of_two = self.num_experts == 2 ** self.num_bits
        # codes[l, j]: bit j of expert l's index, most significant first.
        self.codes = np.array([[int(b) for b in np.binary_repr(value, width=self.num_bits)]
                               for value in range(self.num_experts)], dtype="float32")
        z_init = keras.initializers.RandomUniform(-self.gamma / 100, self.gamma / 100)
        if self.per_example:
            self.z_dense = keras.layers.Dense(self.top_k * self.num_bits, name="selector_logits",
                                              kernel_initializer=z_init, bias_initializer=z_init)
            self.alpha_dense = keras.layers.Dense(
                self.top_k, name="selector_weight_logits",
                kernel_initializer="random_uniform", bias_initializer="random_uniform")
        self._z_init = z_init

    def build(self, selector_shape, experts_shape=None, detached_shape=None):
        if self.per_example:
            self.z_dense.build(selector_shape)
            self.alpha_dense.build(selector_shape)
        else:
            self.z = self.add_weight(name="z", shape=(self.top_k, self.num_bits),
                                     initializer=self._z_init)
            self.alpha = self.add_weight(name="alpha", shape=(self.top_k,),
                                         initializer="random_uniform")

    def selector_outputs(self, selector):
        """`r(z^{(i)})` for each selector i: `[batch, top_k, num_experts]` (`[top_k, n]` static)."""
        z = self.z_dense(selector) if self.per_example else self.z
        z = ops.reshape(z, (-1, self.top_k, 1, self.num_bits))
        s = smooth_step(z, self.gamma)
        codes = ops.cast(self.codes, s.dtype)
        r = ops.prod(codes * s + (1.0 - codes) * (1.0 - s), axis=-1)  # [batch, k, n]
        return r if self.per_example else r[0]

    def _selector_mix(self, selector):
        """`softmax(α)`: `[batch, top_k]` (`[top_k]` static)."""
        alpha = self.alpha_dense(selector) if self.per_example else self.alpha
        if self.top_k == 1:  # softmax over one logit is 1 (and Keras warns about it)
            return ops.ones_like(alpha)
        return ops.softmax(alpha, axis=-1)

    def expert_weights(self, selector):
        r = self.selector_outputs(selector)
        mix = self._selector_mix(selector)
        if self.per_example:
            return ops.einsum("bk,bkn->bn", mix, r)
        weights = ops.einsum("k,kn->n", mix, r)
        return ops.broadcast_to(weights[None, :], (ops.shape(selector)[0], self.num_experts))

    def regularization(self, selector):
        """`entropy_weight · Ω` plus the reachability penalty (n not a power of two), each a
        batch mean of a sum over selectors, on a stop-gradient copy of `selector`."""
        r = ops.cast(self.selector_outputs(ops.stop_gradient(selector)), "float32")
        if not self.per_example:
            r = r[None]
        loss = ops.zeros((), "float32")
        if self.entropy_weight > 0:
            # h(p) = −Σ p log p with 0 log 0 = 0 (`where` keeps the gradient finite there).
            safe = ops.where(r > 0, r, ops.ones_like(r))
            entropy = -ops.sum(ops.where(r > 0, r * ops.log(safe), ops.zeros_like(r)), axis=-1)
            loss = loss + self.entropy_weight * ops.mean(ops.sum(entropy, axis=-1))
        if not self.power_of_two:
            reachable = ops.maximum(ops.sum(r, axis=-1), 1e-6)
            loss = loss + ops.mean(ops.sum(1.0 / reachable - 1.0, axis=-1))
        return loss

    def call(self, selector, experts, detached=None):
        if self.entropy_weight > 0 or not self.power_of_two:
            self.add_loss(self.regularization(selector))
        return super().call(selector, experts, detached=detached)

    def get_config(self):
        config = super().get_config()
        config.update(top_k=self.top_k, gamma=self.gamma, entropy_weight=self.entropy_weight,
                      per_example=self.per_example)
        return config


GATES = {"softmax": Gate, "dselect": DSelectGate}


def gate_spec(gate: str | dict) -> tuple[type, dict]:
    """`"softmax"`, `"dselect"` or `{"type": "dselect", "top_k": 2, "gamma": 1.0,
    "entropy_weight": 1e-3, "per_example": True}` → `(gate class, its hyper-parameters)`;
    unknown names and hyper-parameters raise here, when the backbone is configured."""
    if isinstance(gate, str):
        gate = {"type": gate}
    if not isinstance(gate, dict) or "type" not in gate:
        raise ValueError(f"gate must be one of {sorted(GATES)} or a dict with a 'type'; got "
                         f"{gate!r}.")
    kwargs = dict(gate)
    name = kwargs.pop("type")
    if name not in GATES:
        raise ValueError(f"Unknown gate {name!r}; expected one of {sorted(GATES)}.")
    allowed = {"softmax": set(), "dselect": {"top_k", "gamma", "entropy_weight", "per_example"}}
    unknown = sorted(set(kwargs) - allowed[name])
    if unknown:
        raise ValueError(f"Unknown {name} gate hyper-parameter(s) {unknown}; expected among "
                         f"{sorted(allowed[name])}.")
    return GATES[name], kwargs


def make_gate(gate: str | dict, num_experts: int, name: str) -> MixtureGate:
    """The gate `gate` names (see `gate_spec`) over `num_experts` experts."""
    cls, kwargs = gate_spec(gate)
    return cls(num_experts, name=name, **kwargs)


def gate_config(gate: str | dict) -> Any:
    """`gate` as a plain `get_config` value (a copy of a dict)."""
    return dict(gate) if isinstance(gate, dict) else gate
