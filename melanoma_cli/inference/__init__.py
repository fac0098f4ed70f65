"""Inference-side tasks on a trained model: predict, evaluate, explain, export."""
