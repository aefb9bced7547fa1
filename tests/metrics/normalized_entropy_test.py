import math

import numpy as np

from keras_mtl.metrics import NormalizedEntropy


def test_hand_computed_ne():
    labels = [1.0, 0.0, 0.0, 1.0]
    preds = [0.8, 0.3, 0.1, 0.6]
    log_loss = -(math.log(0.8) + math.log(0.7) + math.log(0.9) + math.log(0.6)) / 4
    base = 0.5
    entropy = -(base * math.log(base) + (1 - base) * math.log(1 - base))
    metric = NormalizedEntropy()
    metric.update_state(labels[:2], preds[:2])
    metric.update_state(labels[2:], preds[2:])
    np.testing.assert_allclose(metric.result(), log_loss / entropy, rtol=1e-6)


def test_base_rate_predictor_scores_one_and_weights_count():
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0], np.float32)
    metric = NormalizedEntropy()
    metric.update_state(labels, np.full(8, 0.25, np.float32))
    np.testing.assert_allclose(metric.result(), 1.0, rtol=1e-6)
    weighted = NormalizedEntropy()
    # Weight 0 rows vanish: the remaining labels [1, 0] have base rate 1/2.
    weighted.update_state([1, 0, 1], [0.5, 0.5, 0.9], sample_weight=[1, 1, 0])
    np.testing.assert_allclose(weighted.result(), 1.0, rtol=1e-6)
