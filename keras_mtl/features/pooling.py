"""Pooling a padded list of embeddings into one vector per row: mean, sum, max, DIN attention.

Every function takes `vectors` `[batch, L, d]` whose padded positions are already zero, and
`present` `[batch, L]` (bool, False at padding). Padding contributes nothing: it is excluded by
`tf.where` (whose gradient at the unselected branch is exactly 0, even when the other branch is
not finite), never by a multiplication. An all-padding row pools to zeros, never NaN. Only
element-wise ops and reductions: XLA compiles all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf


def masked_pool(vectors: tf.Tensor, present: tf.Tensor, pooling: str) -> tf.Tensor:
    """`[batch, d]`: the mean, sum or max of `vectors` over the positions where `present`.

    - `sum`:  Σ_{j present} e_j
    - `mean`: Σ_{j present} e_j / max(n, 1), n the number of present positions (0 → zeros)
    - `max`:  max_{j present} e_j per component; zeros when no position is present
    """
    mask = present[:, :, None]
    if pooling == "sum":
        return tf.reduce_sum(tf.where(mask, vectors, tf.zeros_like(vectors)), axis=1)
    if pooling == "mean":
        total = tf.reduce_sum(tf.where(mask, vectors, tf.zeros_like(vectors)), axis=1)
        count = tf.reduce_sum(tf.cast(present, vectors.dtype), axis=1, keepdims=True)
        return total / tf.maximum(count, tf.ones_like(count))
    if pooling == "max":
        # The dtype's lowest finite value, not -inf: under float16 and in gradients, -inf meets
        # 0 · inf = NaN; an all-padding row is replaced by zeros below.
        lowest = tf.fill(tf.shape(vectors), tf.constant(vectors.dtype.min, vectors.dtype))
        largest = tf.reduce_max(tf.where(mask, vectors, lowest), axis=1)
        any_present = tf.reduce_any(present, axis=1, keepdims=True)
        return tf.where(any_present, largest, tf.zeros_like(largest))
    raise ValueError(f"Unknown pooling {pooling!r}; expected 'mean', 'sum' or 'max' (attention "
                     "pooling is TargetAttention).")


@keras.saving.register_keras_serializable(package="keras_mtl")
class TargetAttention(keras.layers.Layer):
    """DIN target attention (Zhou et al., "Deep Interest Network for Click-Through Rate
    Prediction", KDD 2018): the user-interest vector of a behaviour list w.r.t. a candidate.

    Eq. (3) of the paper, with behaviour embeddings e_1 … e_H and the query (candidate) v_q:

        v_U(q) = f(v_q, e_1, …, e_H) = Σ_{j=1}^{H} a(e_j, v_q) · e_j = Σ_j w_j e_j

    where the sum runs over the non-padded positions only (a padded position has w_j = 0 and
    e_j = 0). `a` is the *activation unit* of Fig. 2, a small MLP scoring one behaviour against
    the query:

        a(e_j, v_q) = W_out · σ(… σ(W_1 [e_j; v_q; e_j − v_q; e_j ⊙ v_q] + b_1) …) + b_out

    Choices, and why:
    - The interaction term is the *element-wise* product e_j ⊙ v_q (as DIN's released code does;
      Fig. 2 draws an outer product, which would make the unit's input d² wide), concatenated with
      both inputs and their difference.
    - Hidden layers `units` (default 80, 40) with `activation` (default sigmoid), as the released
      code; the paper uses PReLU/Dice, any Keras activation name can be passed.
    - **No softmax**: the paper relaxes Σ_j w_j = 1 "to reserve the intensity of user interests"
      (a long history of relevant clicks should weigh more than one). The released code does
      normalise with a softmax; this follows the paper. The output's scale therefore grows with
      the number of relevant behaviours.

    The unit's weights are one set per feature, shared by all rows and by every task: they are
    trunk-side (shared) parameters of the model, like the embedding tables.

    Call: `layer(keys, query, padding_mask)` with `keys` `[batch, L, d]` (zero at padding),
    `query` `[batch, d]`, `padding_mask` `[batch, L]` bool (True at real ids); returns `[batch, d]`.
    """

    def __init__(self, units: Sequence[int] = (80, 40), activation: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        self.activation = activation
        self.hidden = [keras.layers.Dense(u, activation=activation, name=f"hidden_{i}")
                       for i, u in enumerate(self.units)]
        self.score = keras.layers.Dense(1, name="score")

    def build(self, keys_shape, query_shape=None, padding_mask_shape=None):
        shape = (None, None, 4 * int(keys_shape[-1]))
        for layer in self.hidden:
            layer.build(shape)
            shape = (None, None, layer.units)
        self.score.build(shape)
        self.built = True

    def attention_weights(self, keys: tf.Tensor, query: tf.Tensor,
                          padding_mask: tf.Tensor) -> tf.Tensor:
        """`[batch, L]`: w_j = a(e_j, v_q) at real positions, exactly 0 at padding (no softmax)."""
        query = tf.broadcast_to(tf.cast(query, keys.dtype)[:, None, :], tf.shape(keys))
        x = tf.concat([keys, query, keys - query, keys * query], axis=-1)
        for layer in self.hidden:
            x = layer(x)
        weights = tf.cast(self.score(x)[:, :, 0], keys.dtype)
        return tf.where(padding_mask, weights, tf.zeros_like(weights))

    def call(self, keys, query, padding_mask):
        weights = self.attention_weights(keys, query, padding_mask)
        return tf.reduce_sum(weights[:, :, None] * keys, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(units=list(self.units), activation=self.activation)
        return config
