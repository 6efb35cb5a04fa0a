"""The batched mask decoder equals the official per-image MaskDecoder, forward and backward."""

from __future__ import annotations

import copy

import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from fetalgen.segmentation.decoder import decode_batch


def _sam_parts(dim: int, grid: tuple[int, int]) -> tuple[MaskDecoder, PromptEncoder]:
    """A random-init decoder and prompt encoder of SAM's layout (dim 256 is ViT-B's) on a small grid."""
    torch.manual_seed(0)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=2 * dim, num_heads=8),
        transformer_dim=dim,
    )
    prompts = PromptEncoder(
        embed_dim=dim,
        image_embedding_size=grid,
        input_image_size=(16 * grid[0], 16 * grid[1]),
        mask_in_chans=16,
    )
    return decoder, prompts


def _official(decoder, embeddings, pe, sparse, dense, multimask):
    out = [
        decoder(e[None], pe, s[None], d[None], multimask)
        for e, s, d in zip(embeddings, sparse, dense, strict=True)
    ]
    return torch.cat([m for m, _ in out]), torch.cat([i for _, i in out])


@pytest.mark.parametrize(("dim", "grid"), [(32, (6, 10)), (256, (8, 8))])
@pytest.mark.parametrize("multimask", [False, True])
def test_batched_equals_the_official_loop_forward_and_backward(
    dim: int, grid: tuple[int, int], multimask: bool
) -> None:
    n = 5
    decoder, prompts = _sam_parts(dim, grid)
    boxes = torch.tensor([[10.0, 12.0, 90.0, 100.0]]) + 3 * torch.arange(n, dtype=torch.float32)[:, None]
    with torch.no_grad():
        inputs = [*prompts(points=None, boxes=boxes, masks=None), torch.randn(n, dim, *grid)]
    ours = [t.clone().requires_grad_() for t in inputs]  # sparse, dense, embeddings: gradients compared too
    theirs = [t.clone().requires_grad_() for t in inputs]
    pe = prompts.get_dense_pe().detach()

    twin = copy.deepcopy(decoder)
    masks, iou = decode_batch(decoder, ours[2], pe, ours[0], ours[1], multimask)
    ref_masks, ref_iou = _official(twin, theirs[2], pe, theirs[0], theirs[1], multimask)
    assert masks.shape == ref_masks.shape == (n, 3 if multimask else 1, 4 * grid[0], 4 * grid[1])
    torch.testing.assert_close(masks, ref_masks, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(iou, ref_iou, rtol=1e-4, atol=1e-5)

    (masks.square().mean() + iou.sum()).backward()
    (ref_masks.square().mean() + ref_iou.sum()).backward()
    for (name, p), q in zip(decoder.named_parameters(), twin.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-6, msg=name)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-3, atol=1e-6)


def test_one_prompt_per_image_is_required() -> None:
    decoder, prompts = _sam_parts(32, (8, 8))
    sparse, dense = prompts(points=None, boxes=torch.tensor([[1.0, 1.0, 50.0, 50.0]] * 2), masks=None)
    with pytest.raises(ValueError, match="one prompt per image"):
        decode_batch(decoder, torch.randn(3, 32, 8, 8), prompts.get_dense_pe(), sparse, dense)


def test_an_upscaling_of_another_layout_is_refused() -> None:
    """The channels-last upscaling reads the official layout's parameters: another layout is an error, not a
    silently different network."""
    decoder, prompts = _sam_parts(32, (8, 8))
    decoder.output_upscaling[3] = torch.nn.ConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1)
    sparse, dense = prompts(points=None, boxes=torch.tensor([[1.0, 1.0, 50.0, 50.0]]), masks=None)
    with pytest.raises(TypeError, match="output_upscaling"):
        decode_batch(decoder, torch.randn(1, 32, 8, 8), prompts.get_dense_pe(), sparse, dense)
