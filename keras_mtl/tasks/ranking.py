"""Ranking losses over the groups (requests, users) of a flat batch.

keras-rs' `PairwiseLogisticLoss` and `ListMLELoss` take lists: `[lists, list_size]` tensors in which
each row is one request. A multi-task ranker's rows arrive flat, one candidate per row, with the
request as a feature, in any order (shuffled batches split and interleave requests). Gathering them
into padded lists needs sorting and a data-dependent list count, which XLA cannot compile; here
the same losses are computed with a `[batch, batch]` same-group mask in one static-shape pass.
Each group's loss equals keras-rs' loss of that group as one list (the tests check this), and the
task loss is their mean over the batch's groups, as keras-rs averages over lists. Pairs and lists
only form within a batch: rows of one request in different batches are never compared.
"""

from __future__ import annotations

import tensorflow as tf

RANKING_LOSSES = ("pairwise_logistic", "listmle")


def same_group(groups: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """`[B, B]` float: 1 where rows i and j share a group and both count (weight > 0)."""
    groups = tf.reshape(groups, [-1])
    counted = weights > 0
    mask = tf.equal(groups[:, None], groups[None, :]) & counted[:, None] & counted[None, :]
    return tf.cast(mask, tf.float32)


def group_sizes(same: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """`[B]`: the total row weight of each row's group (0 for a row that does not count)."""
    return tf.linalg.matvec(same, weights)


def ranking_loss(name: str, labels: tf.Tensor, scores: tf.Tensor, groups: tf.Tensor,
                 weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`(total, count)`: the summed per-group losses and the (weighted) number of groups, so that
    `total / count` is the mean loss per group. `weights`: each row's weight (0: not counted).

    - `pairwise_logistic` (RankNet; Burges et al., ICML'05): per group
      `(1/n_g) Σ_{i,j: y_i > y_j} log(1 + exp(−(s_i − s_j)))`, pairs weighted by `w_i·w_j`, n_g
      the group's (weighted) size: keras-rs sums each item's pairs and averages over the items.
    - `listmle` (Xia et al., ICML'08, eq. 9): per group the negative log Plackett-Luce likelihood
      of the order by label, `Σ_i [log Σ_{j ranked at or below i} exp(s_j) − s_i]`; rows with
      equal labels are ordered by their position in the batch. Rows weighted by `w_i`.
    """
    same = same_group(groups, weights)
    size = group_sizes(same, weights)
    # Each row adds w_i / (its group's weight), so a group adds 1 whatever its size.
    count = tf.reduce_sum(tf.math.divide_no_nan(weights, size))
    if name == "pairwise_logistic":
        better = tf.cast(labels[:, None] > labels[None, :], tf.float32) * same
        pair_weight = better * tf.math.divide_no_nan(weights, size)[:, None] * weights[None, :]
        margin = scores[:, None] - scores[None, :]
        total = tf.reduce_sum(pair_weight * tf.nn.softplus(-margin))
        return total, count
    if name == "listmle":
        index = tf.range(tf.shape(labels)[0])
        at_or_below = (labels[None, :] < labels[:, None]) | (
            tf.equal(labels[None, :], labels[:, None]) & (index[None, :] >= index[:, None]))
        members = same * tf.cast(at_or_below, tf.float32)  # row i: the rows j ranked at or below
        # log Σ_j members[i, j]·exp(s_j), stable: shifted by row i's largest member score. A row
        # that does not count has no member; its sum is set to 1 so that no log(0) reaches the
        # gradient (where() would still multiply its inf by 0).
        counted = weights > 0
        shift = tf.stop_gradient(tf.reduce_max(
            tf.where(members > 0, scores[None, :], tf.float32.min), axis=1))
        shift = tf.where(counted, shift, 0.0)
        # Non-members are set to a huge negative before exp: another group's far larger score
        # would otherwise overflow to inf, and inf·0 is NaN.
        exponent = tf.where(members > 0, scores[None, :] - shift[:, None], tf.float32.min)
        sums = tf.reduce_sum(tf.exp(exponent), axis=1)
        normaliser = tf.math.log(tf.where(counted, sums, 1.0)) + shift
        per_row = tf.where(counted, normaliser - scores, 0.0)
        return tf.reduce_sum(weights * per_row), count
    raise ValueError(f"Unknown ranking loss {name!r}; use one of {RANKING_LOSSES}.")
