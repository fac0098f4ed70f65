"""Screen int8 quantization variants against the float LiteRT export on outside-set images.

For each variant: top-1 agreement and max |p difference| with the float model, melanoma-flag
agreement at the model's stored threshold, size and model-alone img/s (float measured in the same
run); and as a yardstick, the float model against itself on the same images with +-2 of pixel
noise. Screening uses isic2018_test only: derm7pt is kept for the final equivalence report.

    python benchmarks/int8_variants.py --model runs/final --images 300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine  # noqa: E402
from melanoma_cli.data.images import decode_many  # noqa: E402
from melanoma_cli.data.sources import list_source, parse_source  # noqa: E402
from melanoma_cli.inference import export as ex  # noqa: E402
from melanoma_cli.inference.calibration import calibration_sample  # noqa: E402
from melanoma_cli.runtime.default_model import default_model_dir  # noqa: E402
from melanoma_cli.runtime.litert_engine import interpreter_class, load_litert  # noqa: E402
from melanoma_cli.runtime.run_folder import load_model  # noqa: E402
from melanoma_cli.utils.tensorflow import import_tensorflow  # noqa: E402

VARIANTS = {
    "converter, float32 I/O, 30/class": ("converter", {}, 30),
    "converter, uint8 input, float32 output, 30/class": ("converter", {"uint8_input": True}, 30),
    "converter, uint8 input and output, 30/class": ("converter", {"uint8_input": True,
                                                                  "uint8_output": True}, 30),
    "converter, float32 I/O, 10/class": ("converter", {}, 10),
    "converter, float32 I/O, 100/class": ("converter", {}, 100),
    "ai-edge-quantizer, all int8, 30/class": ("aeq", {"float_ops": ()}, 30),
    "ai-edge-quantizer, first and last layers float, 30/class": ("aeq", {"float_ops": ("first", "last")}, 30),
    "ai-edge-quantizer, last layer float, 30/class": ("aeq", {"float_ops": ("last",)}, 30),
    "ai-edge-quantizer, depthwise convs float, 30/class": ("aeq", {"float_ops": ("depthwise",)}, 30),
    "ai-edge-quantizer, 16-bit activations (a16w8), 30/class": ("aeq", {"float_ops": (),
                                                                      "activation_bits": 16}, 30),
}


def speed(classifier, images: np.ndarray, repeats: int = 2) -> float:
    classifier.predict(images[:16])
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict(images)
        best = max(best, len(images) / (time.perf_counter() - start))
    return best


def converter_int8_bytes(network: Any, calibration: np.ndarray, uint8_input: bool = False,
                         uint8_output: bool = False) -> bytes:
    """The product's full-integer int8 conversion (`export --quantize int8`), optionally with
    uint8 input and/or output (uint8 output rounds probabilities to steps of 1/256)."""
    tf = import_tensorflow()
    converter = ex.int8_converter(network, calibration)
    if uint8_input:
        converter.inference_input_type = tf.uint8
    if uint8_output:
        converter.inference_output_type = tf.uint8
    return ex.convert(converter)


def selective_int8_bytes(float_flatbuffer: bytes, calibration: np.ndarray,
                         float_ops: tuple[str, ...] = ("first", "last"),
                         activation_bits: int = 8) -> bytes:
    """Int8 weights with ai-edge-quantizer, leaving chosen layers in float: the first conv
    ("first"), the classifier ("last"), the depthwise convs ("depthwise"); activations in 8 or 16 bits.

    Raises ImportError when ai-edge-quantizer is not installed.
    """
    from ai_edge_quantizer import quantizer, recipe

    float_model = quantizer.Quantizer(bytearray(float_flatbuffer))
    float_model.load_quantization_recipe(recipe.static_wi8_ai8() if activation_bits == 8
                                         else recipe.static_wi8_ai16())
    if "depthwise" in float_ops:
        float_model.update_quantization_recipe(regex=".*", operation_name="DEPTHWISE_CONV_2D",
                                               algorithm_key="no_quantize")
    if "first" in float_ops:  # the stem: input rescaling and the first convolution
        for op in ("MUL", "ADD", "CONV_2D"):
            float_model.update_quantization_recipe(regex=".*stem_.*", operation_name=op,
                                                   algorithm_key="no_quantize")
    if "last" in float_ops:  # the classifier: global pooling, dense layer, softmax
        for op in ("MEAN", "FULLY_CONNECTED", "SOFTMAX"):
            float_model.update_quantization_recipe(regex=".*", operation_name=op,
                                                   algorithm_key="no_quantize")
    with ex._quiet():
        interpreter = interpreter_class()
        signature = ex._signature_input_name(float_flatbuffer, interpreter)
        data = {"serving_default": [{signature: image[None].astype(np.float32)} for image in calibration]}
        result = float_model.calibrate(data, num_threads=1)
        return bytes(float_model.quantize(result).quantized_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="run folder (default: bundled model)")
    parser.add_argument("--test", default=str(ROOT.parent / "shared/data/isic2018_test"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--calibration", action="append", default=None,
                        help="calibration source(s); default: the run's training.sources")
    parser.add_argument("--only", action="append", default=None, help="variant names to run")
    args = parser.parse_args()
    loaded = load_model(args.model or default_model_dir())
    info = loaded.info
    entries = list_source(parse_source(args.test)).entries
    rng = np.random.default_rng(0)
    picked = sorted(rng.choice(len(entries), min(args.images, len(entries)), replace=False))
    images, _, _ = decode_many([entries[i].path for i in picked], info.image_size)
    work = Path(tempfile.mkdtemp(prefix="int8-variants-"))
    float_bytes = ex._tflite_bytes(loaded.model, None)
    (work / "float.tflite").write_bytes(float_bytes)
    reference = load_litert(work / "float.tflite", info)
    expected = reference.predict(images)
    float_speed = speed(reference, images[:128])
    melanoma = info.classes.index(info.melanoma_class)
    threshold = info.melanoma_threshold
    print(json.dumps({"variant": "float32", "size_mb": len(float_bytes) / 2**20,
                      "model_img_s": round(float_speed, 1), "n": len(images), **machine()}), flush=True)
    # The float model's own stability, as a yardstick: the same images with +-2 of pixel noise.
    noisy = np.clip(images.astype(np.int16) + rng.integers(-2, 3, images.shape), 0, 255).astype(np.uint8)
    jittered = reference.predict(noisy)
    print(json.dumps({"variant": "float32 on the images +-2 pixel noise (yardstick)", "n": len(images),
                      "top1_agreement": float((jittered.argmax(1) == expected.argmax(1)).mean()),
                      "flag_agreement": float(((jittered[:, melanoma] >= threshold)
                                               == (expected[:, melanoma] >= threshold)).mean()),
                      "max_abs_diff": float(np.abs(jittered - expected).max())}), flush=True)
    samples = {}
    for name, (tool, options, per_class) in VARIANTS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        if per_class not in samples:
            samples[per_class] = calibration_sample(info, args.calibration, per_class).images
        start = time.perf_counter()
        try:
            if tool == "converter":
                flat = converter_int8_bytes(loaded.model, samples[per_class], **options)
            else:
                flat = selective_int8_bytes(float_bytes, samples[per_class], **options)
        except Exception as exc:  # a variant that cannot be built is a screening result too
            print(json.dumps({"variant": name, "error": str(exc).splitlines()[0][:300]}), flush=True)
            continue
        seconds = time.perf_counter() - start
        path = work / "variant.tflite"
        path.write_bytes(flat)
        quantized = load_litert(path, info)
        got = quantized.predict(images)
        diff = np.abs(got - expected)
        row = {
            "variant": name,
            "n": len(images),
            "top1_agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
            "flag_agreement": float(((got[:, melanoma] >= threshold)
                                     == (expected[:, melanoma] >= threshold)).mean()),
            "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()),
            "size_mb": round(len(flat) / 2**20, 2),
            "model_img_s": round(speed(quantized, images[:128]), 1),
            "float_img_s": round(float_speed, 1),
            "convert_s": round(seconds, 1),
            "calibration_images": len(samples[per_class]),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
