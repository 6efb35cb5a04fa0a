"""Evaluation of a box-prompted segmenter: the engine, per-case metrics and the box-ellipse baseline."""
