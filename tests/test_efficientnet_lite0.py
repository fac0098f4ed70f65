"""EfficientNet-Lite0 backbone: legacy torch reader, architecture and exact ImageNet outputs."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from melanoma_cli.models.backbones import efficientnet_lite0 as lite0
from melanoma_cli.models.backbones.torch_legacy import RestrictedUnpickler, read_legacy_state_dict

N_TENSORS = 296
N_BN = 49  # one num_batches_tracked per BatchNorm: stem 1, block 0 2, blocks 1-15 3 each, head 1
# Tensor elements without _fc.* and num_batches_tracked. Keras counts BN moving mean/variance as
# (non-trainable) params, exactly like the checkpoint's running_mean/running_var, so
# count_params() equals this number.
N_PARAMS_NO_TOP = 3_413_024
N_PARAMS_TOP = 4_694_024

REF_TOP5 = [905, 807, 699, 854, 753]
REF_TOP5_LOGITS = [8.64398, 6.86543, 4.34109, 4.10154, 3.87011]
REF_SUM = -73.2202
REF_LOGIT_0 = 0.47883
REF_LOGIT_999 = -0.39266


def _legacy_header() -> bytes:
    """The three leading pickles of a legacy torch.save file."""
    return b"".join(
        pickle.dumps(obj, protocol=2)
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})
    )


@pytest.fixture(scope="module")
def weights_path() -> Path:
    return lite0.imagenet_weights_path()


@pytest.fixture(scope="module")
def state_dict(weights_path: Path) -> dict[str, np.ndarray]:
    return read_legacy_state_dict(weights_path)


@pytest.fixture(scope="module")
def imagenet_model() -> keras.Model:
    return lite0.build_efficientnet_lite0(include_top=True, weights="imagenet")


@pytest.fixture(scope="module")
def features_180() -> keras.Model:
    return lite0.build_efficientnet_lite0(input_shape=(180, 180, 3), weights="imagenet")


def test_reference_logits(imagenet_model: keras.Model) -> None:
    i, j, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    x = ((7 * i + 3 * j + 50 * c) % 256).astype("float32")[None]
    logits = keras.ops.convert_to_numpy(imagenet_model(x, training=False))[0]
    assert logits.shape == (1000,)
    top5 = np.argsort(-logits)[:5]
    assert top5.tolist() == REF_TOP5
    np.testing.assert_allclose(logits[top5], REF_TOP5_LOGITS, atol=1e-3, rtol=0)
    assert abs(float(logits.sum()) - REF_SUM) < 1e-2
    assert abs(float(logits[0]) - REF_LOGIT_0) < 1e-3
    assert abs(float(logits[999]) - REF_LOGIT_999) < 1e-3


def test_reader_tensors(state_dict: dict[str, np.ndarray]) -> None:
    assert len(state_dict) == N_TENSORS
    stem = state_dict["_conv_stem.weight"]
    assert stem.shape == (32, 3, 3, 3)
    assert stem.dtype == np.float32
    assert stem.flags.c_contiguous
    assert state_dict["_bn0.num_batches_tracked"].dtype == np.int64
    assert state_dict["_fc.weight"].shape == (1000, 1280)


@pytest.mark.parametrize(
    "content",
    [b"PK\x03\x04 zip archive", b"definitely not a pickle", pickle.dumps(12345, protocol=2), b""],
    ids=["zip", "garbage", "wrong-magic", "empty"],
)
def test_reader_rejects_other_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bogus.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError):
        read_legacy_state_dict(path)


def test_reader_rejects_truncated_file(tmp_path: Path, weights_path: Path) -> None:
    path = tmp_path / "truncated.pth"
    path.write_bytes(weights_path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        read_legacy_state_dict(path)


def test_reader_refuses_other_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # Protocol-0 pickle calling os.system(f"touch {marker}"), placed where the state dict goes.
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_header() + evil)
    with pytest.raises(ValueError, match=r"os\.system"):
        read_legacy_state_dict(path)
    with pytest.raises(pickle.UnpicklingError, match=r"os\.system"):
        RestrictedUnpickler(io.BytesIO(evil)).load()
    assert not marker.exists()


def test_features_shape_and_params(features_180: keras.Model) -> None:
    assert features_180.output_shape == (None, 6, 6, 1280)  # SAME padding: ceil(180 / 32) = 6
    assert features_180.count_params() == N_PARAMS_NO_TOP
    # Every Keras weight came from exactly one tensor: all tensors but num_batches_tracked and _fc.*
    assert len(features_180.weights) == N_TENSORS - N_BN - 2


def test_top_params(imagenet_model: keras.Model) -> None:
    assert imagenet_model.count_params() == N_PARAMS_TOP
    assert len(imagenet_model.weights) == N_TENSORS - N_BN


def test_layer_naming_and_layers_from_block(features_180: keras.Model) -> None:
    names = [layer.name for layer in features_180.layers]
    assert lite0.BLOCK_COUNT == 16
    blocks = set()
    for n in names[1:]:
        match = re.fullmatch(r"(stem|head|block(\d+))_\w+", n)
        assert match is not None, n
        if match.group(2) is not None:
            blocks.add(int(match.group(2)))
    assert blocks == set(range(lite0.BLOCK_COUNT))
    tail = [layer.name for layer in lite0.layers_from_block(features_180, 15)]
    assert tail[0] == "block15_expand_conv"
    assert tail[-1] == "head_relu"
    assert not any(n.startswith(("block1_", "block14_", "stem_")) for n in tail)
    head_only = lite0.layers_from_block(features_180, lite0.BLOCK_COUNT)
    assert [layer.name for layer in head_only] == ["head_conv", "head_bn", "head_relu"]
    all_blocks = lite0.layers_from_block(features_180, 0)
    assert len(all_blocks) == len(names) - 5  # input, rescaling, stem conv/bn/relu
    with pytest.raises(ValueError):
        lite0.layers_from_block(features_180, 17)


def test_no_weights_does_not_read_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args: object) -> None:
        raise AssertionError("weights file must not be read")

    monkeypatch.setattr(lite0, "read_legacy_state_dict", fail)
    monkeypatch.setattr(lite0, "imagenet_weights_path", fail)
    model = lite0.build_efficientnet_lite0(input_shape=(64, 64, 3), weights=None)
    assert model.output_shape == (None, 2, 2, 1280)


@pytest.fixture(scope="module")
def random_model() -> keras.Model:
    return lite0.build_efficientnet_lite0(input_shape=(32, 32, 3), weights=None)


def test_loader_is_strict(random_model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    missing = {k: v for k, v in state_dict.items() if k != "_blocks.3._bn2.running_var"}
    with pytest.raises(ValueError, match=r"_blocks\.3\._bn2\.running_var"):
        lite0.load_torch_weights(random_model, missing, include_top=False)

    extra = {**state_dict, "_blocks.3._se_reduce.weight": np.zeros((1,), np.float32)}
    with pytest.raises(ValueError, match="_se_reduce"):
        lite0.load_torch_weights(random_model, extra, include_top=False)

    bad_shape = {**state_dict, "_conv_head.weight": np.zeros((1280, 320, 3, 3), np.float32)}
    with pytest.raises(ValueError, match=r"_conv_head\.weight.*head_conv"):
        lite0.load_torch_weights(random_model, bad_shape, include_top=False)

    no_fc = {k: v for k, v in state_dict.items() if not k.startswith("_fc.")}
    lite0.load_torch_weights(random_model, no_fc, include_top=False)
    with pytest.raises(ValueError, match=r"_fc\.weight"):
        lite0.load_torch_weights(
            lite0.build_efficientnet_lite0(input_shape=(32, 32, 3), include_top=True, weights=None),
            no_fc,
            include_top=True,
        )


def test_weights_from_path_match_imagenet(features_180: keras.Model, weights_path: Path) -> None:
    from_path = lite0.build_efficientnet_lite0(input_shape=(180, 180, 3), weights=str(weights_path))
    for a, b in zip(from_path.weights, features_180.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
