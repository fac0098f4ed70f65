"""The linear probe of `model.linear_probe`: logistic regression on frozen pretrained features.

The features of the training split are computed once, without augmentation (the backbone is
frozen, so there is nothing to recompute per epoch), standardised, and a multinomial logistic
regression is fitted with L2 strength 1/C (scikit-learn). The standardisation is folded into the
weights, so the probe is one softmax layer on the raw features (models/ensemble.py).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma_cli.config import Config
from melanoma_cli.utils.atomic import write_with
from melanoma_cli.utils.errors import MelanomaError, first_line

# the logit given to a class with no training image: its probability is ~e^-30 of the others'
ABSENT_CLASS_LOGIT = -30.0


@dataclass(frozen=True)
class LinearProbe:
    """A softmax layer's weights: kernel (features, classes) and bias (classes), and the mean and
    scale of the features it was fitted on (what `adapt` measures its prior in)."""

    kernel: np.ndarray
    bias: np.ndarray
    feature_mean: np.ndarray | None = None
    feature_scale: np.ndarray | None = None

    def save(self, path: Path) -> None:
        """Write the arrays to one .npz file, atomically."""
        statistics = ({} if self.feature_mean is None or self.feature_scale is None else
                      {"feature_mean": self.feature_mean, "feature_scale": self.feature_scale})
        write_with(path, lambda tmp: np.savez(tmp, kernel=self.kernel, bias=self.bias, **statistics))

    @classmethod
    def load(cls, path: Path) -> LinearProbe:
        """The probe saved at `path`; a one-line error if it is missing or damaged."""
        try:
            with np.load(path) as arrays:
                return cls(arrays["kernel"], arrays["bias"], arrays.get("feature_mean"),
                           arrays.get("feature_scale"))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise MelanomaError(f"linear probe '{path}' cannot be read ({first_line(exc)}); delete it "
                                "and resume the run to fit it again") from exc

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Softmax of the probe's logits, as the Keras layer computes them."""
        logits = features @ self.kernel + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def ensemble_probabilities(fine_tuned: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """What the ensemble outputs for these members' probabilities (models/ensemble.py): their mean."""
    return (fine_tuned + probe) / 2


def frozen_features(config: Config, images: np.ndarray, stop: Callable[[], bool] = lambda: False,
                    progress: Callable[[int], None] = lambda done: None) -> np.ndarray | None:
    """The pooled pretrained features of `images` (uint8 or float 0-255), batch by batch; None
    when `stop()` turns true between batches."""
    from melanoma_cli.models.ensemble import feature_extractor

    extractor = feature_extractor(config.model, config.data.image_size)
    batch = config.data.batch_size
    chunks = []
    for start in range(0, len(images), batch):
        if stop():
            return None
        chunks.append(np.asarray(extractor.predict_on_batch(images[start:start + batch].astype(np.float32))))
        progress(min(start + batch, len(images)))
    return np.concatenate(chunks) if chunks else np.zeros((0, extractor.output.shape[-1]), np.float32)


def fit_probe(features: np.ndarray, labels: np.ndarray, num_classes: int, c: float,
              balanced: bool) -> LinearProbe:
    """Multinomial logistic regression on standardised `features` (class-balanced when asked),
    as the weights of a softmax layer over all `num_classes` classes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(features)
    regression = LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=3000)
    regression.fit(scaler.transform(features), labels)
    coef, intercept = regression.coef_, regression.intercept_
    if coef.shape[0] == 1:  # two classes: sigmoid(z) is the softmax of (-z/2, z/2)
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    kernel = np.zeros((features.shape[1], num_classes), np.float32)
    bias = np.full(num_classes, ABSENT_CLASS_LOGIT, np.float32)
    present = regression.classes_.astype(int)
    kernel[:, present] = (coef / scaler.scale_).T
    bias[present] = intercept - (coef / scaler.scale_) @ scaler.mean_
    return LinearProbe(kernel, bias, scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32))
