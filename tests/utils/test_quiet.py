"""The known third-party warnings are silenced, by message only: every other warning still shows."""

import logging
import warnings

from fetalgen.utils.quiet import quiet_known_warnings


def test_only_the_known_warnings_are_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_known_warnings()
        warnings.warn(
            "Importing from timm.models.layers is deprecated, please import via timm.layers",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn(
            "Found 2 module(s) in eval mode at the start of training. This may lead to",
            UserWarning,
            stacklevel=1,
        )
        warnings.warn(
            "Importing from timm is deprecated in another way", FutureWarning, stacklevel=1
        )  # not the known one
        warnings.warn("a warning fetalgen's user should read", UserWarning, stacklevel=1)
        warnings.warn(
            "# The axis name: batch will not be used, since it shares the same shape constraints with "
            "another axis: batch.",
            UserWarning,
            stacklevel=1,
        )  # torch.onnx's own text, '#' included
    assert not logging.getLogger("onnx_ir.passes.common.unused_removal").isEnabledFor(logging.INFO)
    assert logging.getLogger("onnxscript.optimizer").isEnabledFor(logging.WARNING)
    assert [str(w.message) for w in caught] == [
        "Importing from timm is deprecated in another way", "a warning fetalgen's user should read"]  # fmt: skip
