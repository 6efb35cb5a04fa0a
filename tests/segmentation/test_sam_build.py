"""SAM building: registry, checkpoints (official key format), input-size resizing, freezing, LoRA, I/O pipeline."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry

from fetalgen.metrics.overlap import dice_score, iou_score
from fetalgen.segmentation.build import (
    SAM_ARCHS,
    CheckpointMismatchError,
    build_sam,
    count_parameters,
    load_sam_weights,
    set_trainable,
)
from fetalgen.segmentation.lora import merge_lora
from fetalgen.segmentation.losses import SegmentationLoss, hard_dice_iou, resize_masks
from fetalgen.segmentation.preprocess import boxes_to_encoder, logits_to_working, to_encoder_input
from fetalgen.utils.checkpoints import CheckpointError


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_sizes_match_segment_anything_registry(name):
    # On the meta device: no memory, no init cost. Same keys and shapes as segment_anything's own builder.
    with torch.device("meta"):
        ours, official = build_sam(name), sam_model_registry[name]()
    assert shapes(ours) == shapes(official)


def test_vit_b_and_medsam_have_93_7m_parameters():
    with torch.device("meta"):
        vit_b, medsam = build_sam("vit_b"), build_sam("medsam")
    assert count_parameters(vit_b) == 93_735_472
    assert shapes(medsam) == shapes(vit_b)


def test_small_is_the_tiny_encoder_with_sams_own_decoder():
    tiny, small, vit_b = build_sam("tiny", seed=0), build_sam("small", seed=0), build_sam("vit_b")
    assert shapes(small.image_encoder.blocks) == shapes(tiny.image_encoder.blocks)
    assert shapes(small.mask_decoder) == shapes(vit_b.mask_decoder)
    assert shapes(small.prompt_encoder) == shapes(vit_b.prompt_encoder)
    assert count_parameters(small) < 6_000_000  # 5.1 M, 4.1 M of them the decoder


def test_tiny_builds_fast_and_is_seeded():
    a, b, c = (
        build_sam("tiny", image_size=64, seed=0),
        build_sam("tiny", image_size=64, seed=0),
        build_sam("tiny", seed=1),
    )
    assert count_parameters(a) < 1_000_000 and set(SAM_ARCHS) >= {"tiny", "vit_b", "vit_l", "vit_h", "medsam"}
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.mask_decoder.iou_token.weight, c.mask_decoder.iou_token.weight)
    with pytest.raises(ValueError, match="unknown SAM model_type"):
        build_sam("vit_xl")
    with pytest.raises(ValueError, match="multiple of the patch size"):
        build_sam("tiny", image_size=100)


def test_checkpoint_in_official_key_format_loads(tmp_path: Path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny", image_size=64, seed=0).state_dict(), path)  # as the official .pth files
    loaded = build_sam("tiny", checkpoint=path, image_size=64, seed=1)
    reference = build_sam("tiny", image_size=64, seed=0)
    for (k, v), w in zip(loaded.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_missing_checkpoint_says_make_weights(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="make weights"):
        build_sam("vit_b", checkpoint=tmp_path / "sam_vit_b_01ec64.pth")


def test_wrong_checkpoint_is_rejected_with_the_keys(tmp_path: Path):
    state = build_sam("tiny", image_size=64, seed=0).state_dict()
    del state["mask_decoder.iou_token.weight"]
    state["mask_decoder.extra.weight"] = torch.zeros(3)
    state["prompt_encoder.no_mask_embed.weight"] = torch.zeros(1, 7)
    for i in range(7):  # more than the five shown
        state[f"junk.{i}"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        build_sam("tiny", checkpoint=path, image_size=64)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 missing keys: mask_decoder.iou_token.weight" in msg
    assert "8 unexpected keys: mask_decoder.extra.weight" in msg and "(3 more)" in msg
    assert (
        "1 shape-mismatched keys: prompt_encoder.no_mask_embed.weight: checkpoint (1, 7) vs model (1, 64)"
        in msg
    )


def test_vit_b_weights_do_not_fit_tiny(tmp_path: Path):
    # A ViT-B-sized patch embedding in a tiny state dict: the shapes say which architecture it is for.
    state = build_sam("tiny", image_size=64, seed=0).state_dict()
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)
    path = tmp_path / "vit_b_like.pth"
    torch.save(state, path)
    with pytest.raises(
        CheckpointMismatchError, match=r"patch_embed.proj.weight: checkpoint \(768, 3, 16, 16\)"
    ):
        build_sam("tiny", checkpoint=path, image_size=64)


def test_position_embeddings_are_resized_to_the_input_size(tmp_path: Path):
    big = build_sam("tiny", image_size=128, seed=0)  # grid 8; global block 1 has rel_pos of length 15
    with torch.no_grad():
        big.image_encoder.pos_embed.normal_()
        big.image_encoder.blocks[1].attn.rel_pos_h.normal_()
    path = tmp_path / "tiny128.pth"
    torch.save(big.state_dict(), path)
    small = build_sam("tiny", image_size=64, checkpoint=path)  # grid 4: pos_embed 4x4, rel_pos length 7
    pos = small.image_encoder.pos_embed
    assert pos.shape == (1, 4, 4, 64)
    expected = F.interpolate(big.image_encoder.pos_embed.permute(0, 3, 1, 2), size=(4, 4), mode="bicubic")
    torch.testing.assert_close(pos, expected.permute(0, 2, 3, 1))
    rel = small.image_encoder.blocks[1].attn.rel_pos_h
    assert rel.shape == (7, 32)
    want = F.interpolate(big.image_encoder.blocks[1].attn.rel_pos_h.T[None], size=7, mode="linear")[0].T
    torch.testing.assert_close(rel, want)
    # Windowed block 0 keeps its window-sized table; everything else is copied as is.
    assert torch.equal(
        small.image_encoder.blocks[0].attn.rel_pos_h, big.image_encoder.blocks[0].attn.rel_pos_h
    )
    assert torch.equal(small.mask_decoder.iou_token.weight, big.mask_decoder.iou_token.weight)
    assert small.image_encoder(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 4, 4)


@pytest.mark.parametrize("trainable", ["decoder", "decoder_prompt", "lora"])
def test_trainable_selection(trainable):
    if trainable == "lora":
        pytest.importorskip("peft")
    sam = build_sam("tiny", image_size=64, seed=0)
    frozen = set_trainable(sam, trainable, lora_rank=2)
    names = {n for n, p in sam.named_parameters() if p.requires_grad}
    decoder = {f"mask_decoder.{n}" for n, _ in sam.mask_decoder.named_parameters()}
    iou_head = {n for n in decoder if n.startswith("mask_decoder.iou_prediction_head.")}
    expected = decoder - iou_head  # single-mask training never uses the IoU prediction
    if trainable == "decoder_prompt":  # the prompt-encoder parts box prompts use
        box = ("point_embeddings.2.weight", "point_embeddings.3.weight", "no_mask_embed.weight")
        expected |= {f"prompt_encoder.{n}" for n in box}
    if trainable == "lora":  # rank-2 adapters on the qkv (64 -> 192) of both encoder blocks
        expected |= {
            f"image_encoder.blocks.{i}.attn.qkv.lora_{ab}.default.weight" for i in range(2) for ab in "AB"
        }
    assert names == expected and iou_head
    n_expected = sum(p.numel() for n, p in sam.named_parameters() if n in expected)
    assert count_parameters(sam, trainable_only=True) == n_expected
    if trainable == "lora":
        assert n_expected - count_parameters(sam.mask_decoder, trainable_only=True) == 2 * (2 * 64 + 192 * 2)
    assert all(not m.training for m in frozen)
    with pytest.raises(ValueError, match="unknown trainable"):
        set_trainable(sam, "everything")


def test_every_trainable_parameter_gets_a_gradient():
    # DDP refuses trainable parameters that the loss never reaches: a box-prompted single-mask step.
    for trainable in ("decoder", "decoder_prompt", "lora"):
        sam = build_sam("tiny", image_size=64, seed=0)
        set_trainable(sam, trainable)
        emb = sam.image_encoder(to_encoder_input(sam, torch.rand(1, 1, 64, 64)))
        sparse, dense = sam.prompt_encoder(
            points=None, boxes=torch.tensor([[8.0, 8.0, 50.0, 40.0]]), masks=None
        )
        logits, _ = sam.mask_decoder(
            emb, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
        )
        logits.sum().backward()
        missing = [n for n, p in sam.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, (trainable, missing)


def test_lora_starts_as_identity_and_trains():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    sam = build_sam("tiny", image_size=64, seed=0)
    x = torch.randn(2, 3, 64, 64)
    before = sam.image_encoder(x)
    set_trainable(sam, "lora", lora_rank=4)
    qkv = sam.image_encoder.blocks[0].attn.qkv
    assert isinstance(qkv, peft.tuners.lora.Linear) and not qkv.base_layer.weight.requires_grad
    out = sam.image_encoder(x)
    assert torch.equal(out, before)
    out.square().mean().backward()
    lora_b = qkv.lora_B["default"].weight
    assert lora_b.grad is not None and lora_b.grad.abs().sum() > 0
    with torch.no_grad():
        lora_b.fill_(0.01)
    assert not torch.allclose(sam.image_encoder(x), before)


def test_merged_state_dict_is_what_peft_merges():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    sam = build_sam("tiny", image_size=64, seed=0)
    set_trainable(sam, "lora", lora_rank=2, lora_alpha=6.0)
    with torch.no_grad():
        for name, p in sam.image_encoder.named_parameters():
            if "lora_B" in name:
                p.normal_()
    ours = merge_lora(sam.state_dict(), alpha=6.0)
    for module in sam.image_encoder.modules():
        if isinstance(module, peft.tuners.lora.LoraLayer):
            module.merge()  # peft's own fold, in place on the base layer
    theirs = sam.state_dict()
    key = "image_encoder.blocks.0.attn.qkv"
    assert torch.allclose(ours[f"{key}.weight"], theirs[f"{key}.base_layer.weight"], atol=1e-6)
    plain = build_sam("tiny", image_size=64, seed=0).state_dict()
    assert not torch.allclose(ours[f"{key}.weight"], plain[f"{key}.weight"])  # the adapters did change it
    assert set(ours) == set(build_sam("tiny", image_size=64).state_dict())


def test_lora_without_peft_says_which_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an install without the [lora] extra sees
    with pytest.raises(ImportError, match=r"pip install -e .\[lora\]"):
        set_trainable(build_sam("tiny", image_size=64), "lora")


def test_lora_keys_after_loading(tmp_path: Path):
    # Official weights are loaded before the adapters are added: the wrapped weight is ...qkv.base_layer.weight.
    path = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny", image_size=64, seed=0).state_dict(), path)
    sam = build_sam("tiny", image_size=64)
    load_sam_weights(sam, path)
    set_trainable(sam, "lora")
    assert "image_encoder.blocks.0.attn.qkv.base_layer.weight" in sam.state_dict()


def test_truncated_and_generator_checkpoints_get_one_line_naming_the_file(tmp_path: Path):
    path = tmp_path / "sam_tiny.pth"
    torch.save(build_sam("tiny", image_size=64, seed=0).state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError, match=r"sam_tiny.pth: cannot be read as a checkpoint with weights_only"
    ):
        build_sam("tiny", checkpoint=path, image_size=64)
    generator = tmp_path / "step_000010.ckpt"
    torch.save({"state_dict": {"unet.w": torch.zeros(2)}, "fetalgen": {"image_size": 32}}, generator)
    with pytest.raises(
        CheckpointMismatchError, match=r"step_000010.ckpt: a fetalgen-train-diffusion checkpoint"
    ):
        build_sam("tiny", checkpoint=generator, image_size=64)


def test_a_finetune_checkpoint_loads_as_sam_weights_with_lora_merged(tmp_path: Path):
    pytest.importorskip("peft")
    torch.manual_seed(0)
    tuned = build_sam("tiny", image_size=64, seed=0)
    set_trainable(tuned, "lora", lora_rank=2, lora_alpha=4.0)
    with torch.no_grad():
        for block in tuned.image_encoder.blocks:
            block.attn.qkv.lora_B["default"].weight.normal_()  # trained adapters
    state = {f"sam.{k}": v for k, v in tuned.state_dict().items()}
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": state, "fetalgen_config": {}, "hyper_parameters": {"lora_alpha": 4.0}}, path)
    plain = build_sam("tiny", checkpoint=path, image_size=64)  # no adapters: the merged weights
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(plain.image_encoder(x), tuned.image_encoder(x), atol=1e-4)


def test_encoder_input_pipeline():
    sam = build_sam("tiny", image_size=128, seed=0)
    images = torch.full((2, 1, 64, 64), 0.5)
    x = to_encoder_input(sam, images)
    assert x.shape == (2, 3, 128, 128)
    expected = (127.5 - sam.pixel_mean) / sam.pixel_std  # 0-255 pixels, SAM's mean/std, no padding (square)
    torch.testing.assert_close(x[0, :, 60, 60], expected[:, 0, 0])
    boxes = boxes_to_encoder(sam, torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (64, 64))
    torch.testing.assert_close(boxes, torch.tensor([[20.0, 40.0, 60.0, 80.0]]))
    logits = logits_to_working(sam, torch.zeros(2, 1, 32, 32), (64, 64))
    assert logits.shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="expected images"):
        to_encoder_input(sam, torch.zeros(1, 64, 64))


def test_hard_dice_iou_matches_the_metrics_package():
    rng = np.random.default_rng(0)
    pred = rng.random((4, 1, 16, 16)) > 0.5
    target = rng.random((4, 1, 16, 16)) > 0.4
    pred[3], target[3] = False, False  # both empty -> 1
    dice, iou = hard_dice_iou(torch.from_numpy(pred), torch.from_numpy(target))
    for i in range(4):
        assert dice[i].item() == pytest.approx(dice_score(pred[i, 0], target[i, 0]))
        assert iou[i].item() == pytest.approx(iou_score(pred[i, 0], target[i, 0]))


def test_loss_at_the_configured_resolution():
    target = torch.zeros(1, 1, 64, 64)
    target[..., 16:48, 16:48] = 1.0
    small = resize_masks(target, 16)  # area average: exact coverage fractions
    assert small.shape == (1, 1, 16, 16) and small[0, 0, 4, 4] == 1 and small[0, 0, 3, 3] == 0
    perfect = (resize_masks(target, 16) * 2 - 1) * 20  # logits of the right sign, large
    loss, parts = SegmentationLoss(resolution=None)(perfect, target)
    assert loss < 0.01 and set(parts) == {"dice", "bce"}
    wrong, _ = SegmentationLoss()(-perfect, target)
    assert wrong > 1.5
    dice_only, _ = SegmentationLoss(dice_weight=1.0, bce_weight=0.0, resolution=64)(-perfect, target)
    assert 0.9 < dice_only <= 1.0
