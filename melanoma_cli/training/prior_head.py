"""A softmax head refitted on a few labelled images, pulled towards the head it replaces.

Maximum a posteriori multinomial logistic regression: the mean class-weighted cross-entropy of the
sample plus `strength / 2 * ||W - W0||^2` in standardised feature coordinates (the archive's feature
mean and scale), where W0 is the current head. With few images the head stays near the current
one; with many it follows the sample. Absent classes keep their prior weights. Solved with L-BFGS
(scipy), exact gradients: a few hundred images take well under a second.
"""

from __future__ import annotations

import numpy as np

from melanoma_cli.training.linear_probe import LinearProbe


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Per-image weights that give every present class the same total (mean 1)."""
    classes, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(classes.tolist(), (len(labels) / (len(classes) * counts)).tolist(), strict=True))
    return np.array([per_class[int(k)] for k in labels])


def fit_towards(prior: LinearProbe, features: np.ndarray, labels: np.ndarray, strength: float,
                mean: np.ndarray, scale: np.ndarray, bias_strength: float = 1e-3) -> LinearProbe:
    """The head refitted on (`features`, `labels`) with a Gaussian prior centred on `prior`.

    `mean` and `scale` standardise the features (the archive's, so that the prior's strength means
    the same for every feature); `strength` is the prior's precision per weight, relative to the
    mean loss of one image.
    """
    from scipy.optimize import minimize

    z = (features - mean) / scale
    k0 = prior.kernel * scale[:, None]  # the prior in standardised coordinates
    b0 = prior.bias + mean @ prior.kernel
    rows, classes = k0.shape
    onehot = np.eye(classes)[labels]
    weights = balanced_weights(labels)[:, None] / len(labels)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = theta[:rows * classes].reshape(rows, classes), theta[rows * classes:]
        probabilities = _softmax(z @ kernel + bias)
        loss = -(weights * onehot * np.log(np.clip(probabilities, 1e-12, None))).sum()
        loss += strength / 2 * ((kernel - k0) ** 2).sum() + bias_strength / 2 * ((bias - b0) ** 2).sum()
        residual = weights * (probabilities - onehot)
        grad_kernel = z.T @ residual + strength * (kernel - k0)
        grad_bias = residual.sum(axis=0) + bias_strength * (bias - b0)
        return float(loss), np.concatenate([grad_kernel.ravel(), grad_bias])

    start = np.concatenate([k0.ravel(), b0])
    theta = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    kernel, bias = theta[:rows * classes].reshape(rows, classes), theta[rows * classes:]
    return LinearProbe((kernel / scale[:, None]).astype(np.float32),
                       (bias - (mean / scale) @ kernel).astype(np.float32))
