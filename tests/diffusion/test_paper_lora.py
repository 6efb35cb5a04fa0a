"""The paper's generator (SD 1.5 + LoRA on RGB-packed pairs) with tiny random components: packing, training through
fetalgen-train-diffusion (LoRA weights only, in the checkpoint), sampling through fetalgen-sample."""

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel  # noqa: E402

from fetalgen.data.cases import DataError  # noqa: E402
from fetalgen.data.synthetic import read_manifest  # noqa: E402
from fetalgen.diffusion.checkpoint import load_generator  # noqa: E402
from fetalgen.diffusion.paper_lora import PaperLoraGenerator, pack_rgb, unpack_rgb  # noqa: E402
from fetalgen.tasks.sample import synthesize  # noqa: E402
from fetalgen.tasks.train_diffusion import train_diffusion  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> Path:
    """A Stable Diffusion folder in diffusers' layout with tiny random components (a 2-level VAE: 16 px -> 8)."""
    root = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    ).save_pretrained(root / "unet")  # fmt: skip
    AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
    ).save_pretrained(root / "vae")  # fmt: skip
    config = transformers.CLIPTextConfig(vocab_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, max_position_embeddings=16)  # fmt: skip
    transformers.CLIPTextModel(config).save_pretrained(root / "text_encoder")
    words = root / "words"
    words.mkdir()
    (words / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (words / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(
        str(words / "vocab.json"), str(words / "merges.txt"), model_max_length=16
    )
    tokenizer.save_pretrained(root / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(
        root / "scheduler"
    )
    return root


def test_pairs_are_packed_as_image_image_mask_and_read_back():
    image = torch.rand(2, 1, 8, 8)
    mask = (torch.rand(2, 1, 8, 8) > 0.5).float()
    rgb = pack_rgb(image, mask)
    assert rgb.shape == (2, 3, 8, 8) and torch.equal(rgb[:, 0], rgb[:, 1])
    assert torch.equal(rgb[:, 2:] > 0, mask > 0)  # the mask is the third channel
    torch.testing.assert_close(unpack_rgb(rgb), torch.cat([image * 2 - 1, mask * 2 - 1], dim=1))


TRAIN = ["model=diffusion/paper_lora", "data.num_real=6", "data.num_val=2", "data.source.n=8",
         "data.source.shape=[40,48]", "data.batch_size=2", "model.image_size=16", "trainer.max_steps=2",
         "trainer.val_check_interval=2", "trainer.enable_progress_bar=false", "logger=none",
         "callbacks.model_checkpoint.every_n_train_steps=2", "callbacks.sample_grid.every_n_steps=2",
         "callbacks.sample_grid.n=2", "callbacks.sample_grid.steps=2"]  # fmt: skip


def test_trains_the_lora_weights_only_and_samples_a_set(compose_cfg, tiny_sd, tmp_path):
    metrics = train_diffusion(compose_cfg("train_diffusion", [*TRAIN, f"model.pretrained={tiny_sd}"]))
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    saved = checkpoint["state_dict"]
    assert saved and all("lora" in k for k in saved)  # the LoRA weights, never the base model's
    assert checkpoint["fetalgen"]["pretrained"] == str(tiny_sd)
    generator, scheduler_config, meta = load_generator(metrics["checkpoint"])
    assert isinstance(generator, PaperLoraGenerator) and meta["image_size"] == 16
    base = UNet2DConditionModel.from_pretrained(tiny_sd, subfolder="unet")
    frozen = dict(base.named_parameters())
    lora = {n: p for n, p in generator.unet.named_parameters() if "lora" in n}
    assert lora and all(torch.equal(p, frozen[n.replace(".base_layer", "")]) for n, p in generator.unet.named_parameters()
                        if "lora" not in n and n.replace(".base_layer", "") in frozen)  # fmt: skip
    assert any(not torch.equal(saved[f"unet.{n}"], torch.zeros_like(p)) for n, p in lora.items())

    out = tmp_path / "set"
    synthesize(compose_cfg("sample", [f"ckpt_path={metrics['checkpoint']}", "n=3", "batch_size=2", "steps=2",
                                      f"out={out}", "class_label=null", "progress=false", "fidelity.enabled=false"]))  # fmt: skip
    entries = read_manifest(out)
    assert sorted(e.index for e in entries) == [0, 1, 2] and {e.mode for e in entries} == {"joint"}
    pairs = generator.sample(2, seed=0, steps=2)
    assert pairs.shape == (2, 2, 16, 16) and torch.isfinite(pairs).all()
    torch.testing.assert_close(generator.sample(2, seed=0, steps=2), pairs)  # same seed, same pairs
    with pytest.raises(ValueError, match="no mask_conditioned mode"):
        generator.sample(1, steps=2, masks=torch.zeros(1, 1, 16, 16))
    from fetalgen.tasks.export import export

    with pytest.raises(ValueError, match="the paper's LoRA generator has no diffusers pipeline export"):
        export(compose_cfg("export", [f"ckpt_path={metrics['checkpoint']}", f"out={tmp_path / 'export'}"]))
    assert not (tmp_path / "export" / "MODEL_CARD.md").exists()  # exit 0 with a UNet's card before


def test_lora_weights_of_another_rank_are_refused(compose_cfg, tiny_sd, tmp_path):
    metrics = train_diffusion(compose_cfg("train_diffusion", [*TRAIN, f"model.pretrained={tiny_sd}",
                                                              "trainer.max_steps=1", "callbacks.sample_grid.every_n_steps=0"]))  # fmt: skip
    contents = torch.load(metrics["checkpoint"], weights_only=True)
    contents["fetalgen"]["lora_rank"] = 8
    torch.save(contents, tmp_path / "other.ckpt")
    with pytest.raises(DataError, match="do not fit .* with rank 8"):
        load_generator(tmp_path / "other.ckpt")


def test_the_base_model_is_a_local_folder_whose_hash_the_checkpoint_records(compose_cfg, tiny_sd, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="not a local Stable Diffusion folder .* does not contact the Hub"):
        PaperLoraGenerator("stable-diffusion-v1-5/stable-diffusion-v1-5", torch.optim.AdamW)
    base = tmp_path / "sd"
    shutil.copytree(tiny_sd, base)
    metrics = train_diffusion(compose_cfg("train_diffusion", [*TRAIN, f"model.pretrained={base}",
                                                              "trainer.max_steps=1", "callbacks.sample_grid.every_n_steps=0"]))  # fmt: skip
    assert len(torch.load(metrics["checkpoint"], weights_only=True)["fetalgen"]["pretrained_sha256"]) == 64
    load_generator(metrics["checkpoint"])  # the same base model: loads
    scheduler = base / "scheduler" / "scheduler_config.json"
    scheduler.write_text(
        scheduler.read_text().replace("0.012", "0.02")
    )  # another base model under the same path
    with pytest.raises(DataError, match="is not the one these LoRA weights were trained on"):
        load_generator(metrics["checkpoint"])
