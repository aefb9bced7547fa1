"""Task gradients at the cut, block by block, in the structure the backbone gives them.

At the representation level, task k's gradient is a list of blocks, one per cut tensor s
(`blocks[k][s]`). Each block is one of:

- a dense tensor shaped like cut tensor s;
- `None`: task k does not reach cut tensor s (PLE: task j's input to the last level), an exact
  zero that is never materialised;
- an `OuterProductBlock`: task k reads cut tensor s (`[batch, experts, units]`) only through a
  gated mixture `m_k = Σ_e w_k[b, e] E[b, e, :]` (MMoE eq. 6, PLE eq. 4), so by the chain rule
  `∂L_k/∂E[b, e, d] = w_k[b, e] · ∂L_k/∂m_k[b, d]`: batch × (experts + units) numbers instead of
  batch × experts × units.

Every reduction a balancer needs from the matrix `J` (row k = concatenation of `blocks[k]`) is
computed here from the blocks without building `J`: inner products of outer-product blocks are
`Σ_b (w_i[b]·w_j[b]) (g_i[b]·g_j[b])`, and the combination `Σ_k c_k J_k` is one pass over the
cut tensor, the same work plain back-propagation does there. Methods that read individual entries
call `dense_blocks` first.
"""

from __future__ import annotations

import tensorflow as tf


class OuterProductBlock:
    """`block[b, e, d] = weights[b, e] · grads[b, d]` (row-wise outer products), never built unless
    `dense()` is called."""

    def __init__(self, weights: tf.Tensor, grads: tf.Tensor):
        self.weights = tf.cast(weights, grads.dtype)
        self.grads = grads

    def dense(self) -> tf.Tensor:
        return self.weights[:, :, None] * self.grads[:, None, :]

    def map(self, fn) -> OuterProductBlock:
        """The block with `fn` applied to its gradient factor (linear maps such as unscaling)."""
        return OuterProductBlock(self.weights, fn(self.grads))


def dense_block(block, like: tf.Tensor) -> tf.Tensor:
    """`block` as a tensor shaped like `like` (zeros for `None`)."""
    if block is None:
        return tf.zeros_like(like)
    if isinstance(block, OuterProductBlock):
        return block.dense()
    return block


def dense_blocks(blocks: list[list], likes: list[tf.Tensor]) -> list[list[tf.Tensor]]:
    """Every block as a tensor; `likes[s]` gives cut tensor s's shape."""
    return [[dense_block(b, like) for b, like in zip(row, likes, strict=True)] for row in blocks]


def compiling_with_xla() -> bool:
    """Whether the function being traced is compiled by XLA (`jit_compile=True`).

    The reductions below pick their form by it: XLA's CPU reductions run 4–5× slower than its
    dot (an Eigen kernel), so under XLA a row sum is a product with a ones vector, while without
    XLA TensorFlow's own reduction is as fast as the product (timed by hand on 2 cores, four
    2048 × 256 squared norms: 2.1 ms reduced vs 0.47 ms as products under XLA, 0.94 vs 0.88 ms
    without). TensorFlow's XLA control-flow context is the only record of it during tracing: its
    module is internal, so this falls back to False if it moves (the test of this function then
    fails, and every reduction stays correct, only slower)."""
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:  # pragma: no cover - TensorFlow moved it
        return False
    return bool(GraphOrParentsInXlaContext(ops.get_default_graph()))


def row_dots(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """`[batch]`: the inner products of `a` and `b` row by row (rows: the leading dimension,
    everything else flattened)."""
    a, b = _rows(a), _rows(b)
    if compiling_with_xla():
        return tf.matmul(a * b, tf.ones([tf.shape(a)[1], 1], a.dtype))[:, 0]
    return tf.reduce_sum(a * b, axis=1)


def sum_of_squares(tensor: tf.Tensor) -> tf.Tensor:
    """`‖t‖²` as the sum of its rows' squared norms (`row_dots`): a `[d0, -1]` view reduced by
    rows, which ran about twice as fast as a flat dot or `reduce_sum` (timed by hand)."""
    if tensor.shape.rank is not None and tensor.shape.rank >= 2:
        return tf.reduce_sum(row_dots(tensor, tensor))
    return tf.reduce_sum(tf.square(tensor))


def _rows(tensor: tf.Tensor) -> tf.Tensor:
    return tf.reshape(tensor, [tf.shape(tensor)[0], -1])


def block_inner(a, b) -> tf.Tensor:
    """`⟨a, b⟩` of two blocks of the same cut tensor."""
    if a is None or b is None:
        return tf.constant(0.0, tf.float32)
    if isinstance(a, OuterProductBlock) and isinstance(b, OuterProductBlock):
        return tf.reduce_sum(row_dots(a.weights, b.weights) * row_dots(a.grads, b.grads))
    if isinstance(b, OuterProductBlock):
        a, b = b, a
    if isinstance(a, OuterProductBlock):  # against a dense block: Σ_bed w[b,e] g[b,d] t[b,e,d]
        return tf.reduce_sum(a.weights * tf.einsum("bed,bd->be", b, a.grads))
    if a is b:
        return sum_of_squares(a)
    return tf.reduce_sum(row_dots(a, b))


def block_gramian(blocks: list[list]) -> tf.Tensor:
    """`J Jᵀ` `[K, K]` from the blocks, without building `J`.

    Beyond `PAIRWISE_MAX_TASKS`, vectorised per cut tensor: the dense blocks of all tasks are
    stacked and multiplied once, and so are the factors of the outer-product blocks
    (`Σ_b (W_i W_jᵀ)[b] (g_i g_jᵀ)[b]`), so the graph holds a few ops per cut tensor rather than
    K²/2 pairs (compile time and speed at K = 16 and more).
    Only pairs of a dense and an outer-product block of the same tensor (rare: ESMM-style losses)
    go pair by pair.
    """
    num_tasks = len(blocks)
    if num_tasks <= (PAIRWISE_MAX_TASKS_XLA if compiling_with_xla() else PAIRWISE_MAX_TASKS):
        return _pairwise_gramian(blocks)
    dtype = next(b.grads.dtype if isinstance(b, OuterProductBlock) else b.dtype
                 for row in blocks for b in row if b is not None)
    total = tf.zeros([num_tasks, num_tasks], dtype)
    for s in range(len(blocks[0])):
        column = [row[s] for row in blocks]
        dense = [k for k, b in enumerate(column) if isinstance(b, tf.Tensor)]
        outer = [k for k, b in enumerate(column) if isinstance(b, OuterProductBlock)]
        if dense:
            rows = tf.stack([tf.reshape(column[k], [-1]) for k in dense])
            total += _spread(tf.matmul(rows, rows, transpose_b=True), dense, num_tasks)
        if outer:
            # Row-batched [B, O, ·] factors: XLA's CPU matmul with the batch first (an einsum
            # with the batch in the middle ran twice as slow).
            weights = tf.stack([column[k].weights for k in outer], axis=1)  # [B, O, E]
            grads = tf.stack([column[k].grads for k in outer], axis=1)  # [B, O, D]
            gram = tf.reduce_sum(tf.matmul(weights, weights, transpose_b=True)
                                 * tf.matmul(grads, grads, transpose_b=True), axis=0)
            total += _spread(gram, outer, num_tasks)
        if dense and outer:
            mixed = tf.stack([tf.stack([block_inner(column[i], column[j]) for j in dense])
                              for i in outer])
            cross = _spread_pair(mixed, outer, dense, num_tasks)
            total += cross + tf.transpose(cross)
    return total


# Up to this many tasks the K(K+1)/2 pairs are cheaper as separate row products than the stacked
# form (timed by hand: MMoE 8 × 256 cut, batch 2048, 2 cores). Without XLA: 3.1 ms either way at
# K = 4, pairs 11.9 ms vs stacked 6.5 ms at K = 8. Under XLA, with `row_dots` as products: 1.1 vs
# 4.8 ms at K = 4, 3.3 vs 7.7 ms at K = 8; at K = 16, 13 vs 16 ms but a graph that compiles
# slowly, and at K = 32 41 vs 31 ms. Other forms of the outer-product part tried at K = 16 under
# XLA (by hand, 9.7 ms stacked): half-blocks for the symmetry 12.9 ms, einsums 11.6 ms, a
# [B, D, K] layout 18 ms, chunked block-diagonal products 16-35 ms; the batched product itself
# runs at about 42 GFLOP/s, and forms that make it one large product do 8x the arithmetic.
PAIRWISE_MAX_TASKS = 4
PAIRWISE_MAX_TASKS_XLA = 8


def _pairwise_gramian(blocks: list[list]) -> tf.Tensor:
    num_tasks = len(blocks)
    entries = {}
    for i in range(num_tasks):
        for j in range(i, num_tasks):
            value = tf.add_n([block_inner(a, b)
                              for a, b in zip(blocks[i], blocks[j], strict=True)])
            entries[i, j] = entries[j, i] = value
    return tf.stack([tf.stack([entries[i, j] for j in range(num_tasks)])
                     for i in range(num_tasks)])


def _spread(gram: tf.Tensor, tasks: list[int], num_tasks: int) -> tf.Tensor:
    """A Gramian among `tasks` placed in the `[K, K]` one (zeros elsewhere)."""
    return _spread_pair(gram, tasks, tasks, num_tasks)


def _spread_pair(block: tf.Tensor, rows: list[int], columns: list[int], num_tasks: int):
    place_rows = tf.one_hot(rows, num_tasks, dtype=block.dtype)  # [R, K]
    place_columns = tf.one_hot(columns, num_tasks, dtype=block.dtype)
    return tf.matmul(tf.matmul(place_rows, block, transpose_a=True), place_columns)


def block_row_norms(blocks: list[list]) -> tf.Tensor:
    """`‖J_k‖` for every task `[K]`, without building `J`."""
    return tf.sqrt(tf.stack([tf.add_n([block_inner(b, b) for b in row]) for row in blocks]))


def block_weighted_sum(blocks: list[list], weights: tf.Tensor) -> list[tf.Tensor]:
    """`Σ_k w_k blocks[k][s]` for every cut tensor s, in its own shape. Outer-product blocks of a
    tensor are summed as `Σ_k (w_k W_k)[b, e] G_k[b, d]`, fused into one pass over it."""
    return _block_sum(blocks, tf.unstack(weights))


def block_sum(blocks: list[list]) -> list[tf.Tensor]:
    """`Σ_k blocks[k][s]` for every cut tensor s, in its own shape (`block_weighted_sum` with
    unit weights, without multiplying by them)."""
    return _block_sum(blocks, [None] * len(blocks))


def _block_sum(blocks: list[list], weights: list) -> list[tf.Tensor]:
    def weighted(w, tensor):
        return tensor if w is None else tf.cast(w, tensor.dtype) * tensor

    combined = []
    for s in range(len(blocks[0])):
        dense_terms, outer_terms = [], []
        for w, row in zip(weights, blocks, strict=True):
            block = row[s]
            if isinstance(block, OuterProductBlock):
                outer_terms.append((w, block))
            elif block is not None:
                dense_terms.append(weighted(w, block))
        if outer_terms:
            dense_terms.append(_outer_product_sum(
                [(weighted(w, b.weights), b.grads) for w, b in outer_terms]))
        if not dense_terms:
            raise ValueError(f"No task reaches cut tensor {s}: every block is None.")
        combined.append(tf.add_n(dense_terms))
    return combined


def _outer_product_sum(factors: list[tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """`Σ_k W_k[b, e] G_k[b, d]` `[B, E, D]` for factors `(W_k [B, E], G_k [B, D])`.

    Under XLA the broadcast products fuse into one loop over the output, the fastest form there;
    without XLA TensorFlow would materialise each product, and one row-batched matmul
    `[B, E, K] × [B, K, D]` is faster (timed by hand, batch 2048, 8 × 256, 2 cores: K = 4
    2.1 ms fused vs 3.2 ms as a matmul under XLA, 8.9 vs 4.8 ms without; K = 16 6.1 vs 11.0 ms
    under XLA, 38 vs 9.5 ms without)."""
    if len(factors) == 1 or compiling_with_xla():
        return tf.add_n([w[:, :, None] * g[:, None, :] for w, g in factors])
    weights = tf.stack([w for w, _ in factors], axis=2)
    grads = tf.stack([g for _, g in factors], axis=1)
    return tf.matmul(weights, grads)
