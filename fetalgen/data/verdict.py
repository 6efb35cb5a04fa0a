"""The one rule that decides whether a synthetic pair passes (``qc_pass`` in the manifest).

A pair passes when its mask passed the mask checks (:func:`fetalgen.metrics.synthesis.qc_mask`: empty, ellipse
fit, area, border) and, once the set is judged with a threshold, when a reference segmenter's mask of its image
agrees with its mask at least that much. The writer calls it without an agreement, the judge again with
``fidelity.min_agreement``, and an arm that reads the set with ``data.min_agreement``
(:func:`fetalgen.data.synthetic.exclusion`) with its own threshold; the mask checks' own verdict stays in
``qc["passed"]``, so a re-judge (or an arm) starts from it.
"""

from __future__ import annotations

AGREEMENT = "agreement"  # the prefix of the agreement's reason


def qc_verdict(
    masks_passed: bool,
    mask_reasons: list[str],
    agreement: float | None = None,
    min_agreement: float | None = None,
) -> tuple[bool, list[str]]:
    """``(qc_pass, reasons)`` of a pair: the mask checks' verdict and reasons, with the agreement threshold's."""
    reasons = [r for r in mask_reasons if not r.startswith(AGREEMENT)]
    too_low = min_agreement is not None and agreement is not None and agreement < min_agreement
    if too_low:
        reasons.append(f"{AGREEMENT}: {agreement:.3f} < {min_agreement}")
    return masks_passed and not too_low, reasons
