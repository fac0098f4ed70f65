"""tf.data input pipelines over the decoded image cache, and the training augmentation.

The dataset scan decodes every image once to its model input (uint8, image_size^2 x 3: about
150 KB at 224 px, ~3.7 GB for 25,000 images) into the run's image cache (data/cache.py: in RAM
or memory-mapped on disk); the pipeline reads batches from it by index, so no epoch decodes a
file again.
"""

from __future__ import annotations

import numpy as np

from melanoma_cli.config import AugmentConfig
from melanoma_cli.data.cache import CachedImages
from melanoma_cli.utils.tensorflow import import_tensorflow

# ITU-R BT.601 luma: the grey that saturation changes move towards or away from.
LUMA = (0.299, 0.587, 0.114)


def transform_matrices(flip_x, flip_y, angle, zoom, shift_x, shift_y, height: int, width: int):
    """Per-image projective transforms (N x 8) for ImageProjectiveTransformV3, all fused in one.

    Each row maps an output pixel to the input pixel it samples, about the image centre: mirror
    (flip_x, flip_y: 1 or -1), rotate by `angle` radians, scale by `zoom` (>1 samples a larger
    area: zooms out), then shift by (shift_x, shift_y) pixels. Arguments are length-N tensors.
    """
    tf = import_tensorflow()

    cos, sin = tf.cos(angle), tf.sin(angle)
    # cos(pi/2) is 6e-17, not 0: snap so that quarter turns sample exact pixel centres
    cos = tf.where(tf.abs(cos) < 1e-6, tf.zeros_like(cos), cos)
    sin = tf.where(tf.abs(sin) < 1e-6, tf.zeros_like(sin), sin)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    a0, a1 = cos * zoom * flip_x, -sin * zoom * flip_y
    b0, b1 = sin * zoom * flip_x, cos * zoom * flip_y
    a2 = cx - a0 * cx - a1 * cy + shift_x
    b2 = cy - b0 * cx - b1 * cy + shift_y
    zeros = tf.zeros_like(a0)
    return tf.cast(tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1), tf.float32)


def apply_transforms(images, matrices, interpolation: str = "BILINEAR"):
    """One ImageProjectiveTransformV3 call for the whole batch, borders reflected."""
    tf = import_tensorflow()

    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=matrices, output_shape=tf.shape(images)[1:3],
        fill_value=0.0, interpolation=interpolation, fill_mode="REFLECT")


class FusedAugmenter:
    """Random flips, rotation, zoom and translation as one projective transform per image, then
    cheap colour jitter: contrast, brightness, saturation and hue as per-image scalars, composed
    into one 3x3 colour matrix and offset per image and applied in one pass over the batch.

    Randomness comes from stateless ops keyed by a seeded generator that advances once per batch:
    different every batch and epoch, the same for the same seed. Works on float32 0-255 RGB and
    returns float32 0-255 RGB. The ranges follow the Keras layers of the same names: rotation
    in turns, zoom and translation as fractions of the image, brightness as a fraction of 255,
    saturation as Keras's RandomSaturation factor around 0.5, hue as a fraction of the colour wheel.
    """

    def __init__(self, config: AugmentConfig, seed: int) -> None:
        tf = import_tensorflow()

        self.config = config
        self.generator = tf.random.Generator.from_seed(seed)

    @property
    def geometric(self) -> bool:
        c = self.config
        return c.flip or c.rotation > 0 or c.zoom > 0 or c.translation > 0

    def __call__(self, images, training: bool = True):
        tf = import_tensorflow()

        c = self.config
        x = tf.cast(images, tf.float32)
        if not training:
            return x
        n = tf.shape(x)[0]
        height, width = x.shape[1], x.shape[2]
        seeds = self.generator.uniform_full_int([9, 2], dtype=tf.int32)

        def uniform(index: int, low: float, high: float):
            return tf.random.stateless_uniform([n], seeds[index], low, high)

        if self.geometric:
            ones = tf.ones([n])
            flip_x = flip_y = ones
            if c.flip:
                flip_x = tf.where(uniform(0, 0, 1) < 0.5, -ones, ones)
                flip_y = tf.where(uniform(1, 0, 1) < 0.5, -ones, ones)
            angle = uniform(2, -c.rotation, c.rotation) * 2 * np.pi if c.rotation > 0 else 0 * ones
            zoom = uniform(3, 1 - c.zoom, 1 + c.zoom) if c.zoom > 0 else ones
            shift_x = shift_y = 0 * ones
            if c.translation > 0:
                shift = tf.random.stateless_uniform([2, n], seeds[4], -c.translation, c.translation)
                shift_x, shift_y = shift[0] * width, shift[1] * height
            x = apply_transforms(x, transform_matrices(flip_x, flip_y, angle, zoom, shift_x, shift_y,
                                                       height, width))
        if c.contrast > 0 or c.brightness > 0 or c.saturation > 0 or c.hue > 0:
            x = self._colour(x, n, uniform)
        return x

    def _colour(self, x, n, uniform):
        """Contrast, brightness, saturation and hue are each affine in RGB: compose them into one
        3x3 matrix and offset per image, apply that in a single pass, then clip to 0-255."""
        tf = import_tensorflow()

        c = self.config
        matrix = tf.eye(3, batch_shape=[n])
        offset = tf.zeros([n, 3])
        if c.contrast > 0:  # (x - mean) * f + mean, the mean per image and channel
            factor = uniform(5, 1 - c.contrast, 1 + c.contrast)[:, None]
            mean = tf.reduce_mean(x, axis=[1, 2])
            matrix = matrix * factor[:, :, None]
            offset = offset * factor + (1 - factor) * mean
        if c.brightness > 0:
            offset = offset + uniform(6, -c.brightness, c.brightness)[:, None] * 255
        if c.saturation > 0:  # grey + (x - grey) * f, grey = luma
            u = uniform(7, 0.5 - c.saturation / 2, 0.5 + c.saturation / 2)
            factor = (u / (1 - u))[:, None, None]
            luma = tf.broadcast_to(tf.constant(LUMA, tf.float32)[None, None, :], [1, 3, 3])
            step = factor * tf.eye(3)[None] + (1 - factor) * luma
            matrix, offset = tf.matmul(step, matrix), tf.linalg.matvec(step, offset)
        if c.hue > 0:
            step = _hue_rotation(uniform(8, -c.hue, c.hue) * 2 * np.pi)
            matrix, offset = tf.matmul(step, matrix), tf.linalg.matvec(step, offset)
        shape = tf.shape(x)
        flat = tf.matmul(tf.reshape(x, [n, -1, 3]), matrix, transpose_b=True) + offset[:, None, :]
        return tf.clip_by_value(tf.reshape(flat, shape), 0.0, 255.0)


def _hue_rotation(angle):
    """Per-image RGB matrices rotating hue by `angle` radians about the grey axis (via YIQ)."""
    tf = import_tensorflow()

    to_yiq = tf.constant([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    from_yiq = tf.linalg.inv(to_yiq)
    cos, sin = tf.cos(angle), tf.sin(angle)
    one, zero = tf.ones_like(angle), tf.zeros_like(angle)
    rotate = tf.reshape(tf.stack([one, zero, zero, zero, cos, -sin, zero, sin, cos], axis=1), [-1, 3, 3])
    return tf.matmul(tf.matmul(from_yiq[None], rotate), to_yiq[None])


def build_augmenter(config: AugmentConfig, seed: int) -> FusedAugmenter | None:
    """The training augmenter for dermoscopy (see FusedAugmenter), or None when it is off."""
    if not config.enabled:
        return None
    c = config
    if not (c.flip or c.rotation > 0 or c.zoom > 0 or c.translation > 0 or c.contrast > 0
            or c.brightness > 0 or c.saturation > 0 or c.hue > 0):
        return None
    return FusedAugmenter(config, seed)


def make_dataset(
    images: np.ndarray | CachedImages,
    labels: np.ndarray | None,
    num_classes: int,
    batch_size: int,
    *,
    shuffle: bool = False,
    augmenter=None,
    seed: int = 0,
):
    """A batched, prefetched dataset of float32 0-255 images and one-hot labels (if given).

    The dataset holds image indices, not images: each batch of indices is read from `images`
    (an array or the rows of an `ImageCache`) by a NumPy call, so the pool's size is bounded by
    RAM or disk, not by the 2 GB of a graph constant. Shuffling and augmentation are for the
    training split only; they are seeded.
    """
    tf = import_tensorflow()

    image_shape = tuple(images.shape[1:])
    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    one_hot = None if labels is None else tf.constant(np.eye(num_classes, dtype=np.float32)[labels])

    def read(indices):
        x = tf.numpy_function(lambda rows: np.asarray(images[rows], np.uint8), [indices], tf.uint8,
                              stateful=False)
        x = tf.ensure_shape(x, (None, *image_shape))
        return x if one_hot is None else (x, tf.gather(one_hot, indices))

    def prepare(x, *rest):
        x = tf.cast(x, tf.float32)
        if augmenter is not None:
            x = augmenter(x, training=True)
        return (x, *rest) if rest else x

    # Reading batches may run ahead in parallel (in order); augmentation is one sequential map:
    # the augmenter's generator advances once per batch in order, which keeps the random draws
    # reproducible; each op inside uses every core (below).
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(prepare)
    # tf.data runs map functions single-threaded by default; let each augmentation op use every
    # core instead (measured: twice the augmented batches per second on 2 cores, same results).
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 0
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
