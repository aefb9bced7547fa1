"""FairGrad (Ban & Ji, ICML 2024)."""

from __future__ import annotations

from keras_mtl.balancers.gramian import GramianWeighting
from keras_mtl.balancers.registry import register
from keras_mtl.balancers.solvers import power_equation_weights


@register("fairgrad")
class FairGrad(GramianWeighting):
    """α-fair allocation of the update among tasks.

    Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024: the update
    `d = Σ_i w_i g_i` maximises the α-fair utility of the task improvements `⟨g_i, d⟩`, which gives

        G w = w^{-1/α}        (element-wise, w > 0)

    solved by Newton's method on its convex potential (`solvers.power_equation_weights`; the
    official code calls scipy's `least_squares`). Limit cases, tested: α = 1 is proportional
    fairness, Nash-MTL's equation; α → ∞ is max-min fairness, `G w = 1` (equal improvement of every
    task); α → 0 tends to the utilitarian `w = 1` (plain summed-loss training). Default α = 1.
    TorchJD's published output for α = 1 on `[[-4, 1, 1], [6, 1, 1]]`, `[0.0766, 0.9985, 0.9985]`,
    is ours. Solved on the equilibrated Gramian (see `power_equation_weights`), with no ridge by default
    (`regularization` adds one); tasks with a zero gradient get weight 0.
    """

    def __init__(self, alpha: float = 1.0, regularization: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = self.check_range("alpha", alpha, 0.0)
        if self.alpha == 0.0:
            raise ValueError("fairgrad alpha must be > 0 (α → 0 is plain summed-loss training: "
                             "use 'ew').")
        self.regularization = self.check_range("regularization", regularization, 0.0)

    def weights_from_gramian(self, gram, context):
        return power_equation_weights(gram, self.alpha, self.regularization), ()

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha,
                "regularization": self.regularization}
