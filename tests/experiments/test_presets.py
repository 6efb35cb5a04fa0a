"""Every experiment preset and arm composes with its entry point; the small ones also instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest

from fetalgen.cli import CONFIG_DIR

PRESETS = sorted(p.parent.name for p in Path(CONFIG_DIR, "experiment").glob("*/diffusion.yaml"))


def test_presets_exist() -> None:
    assert PRESETS == ["cpu", "demo", "paper"]


@pytest.mark.parametrize("preset", PRESETS)
def test_diffusion_preset_composes(compose_cfg, preset: str) -> None:
    cfg = compose_cfg("train_diffusion", [f"experiment={preset}/diffusion"])
    assert cfg.data.image_size == cfg.model.image_size == cfg.model.unet.sample_size
    assert preset in cfg.tags
    if preset != "paper":  # the paper UNet is large; its config is checked above
        model = hydra.utils.instantiate(cfg.model)
        assert model.num_classes == (3 if preset == "cpu" else 0)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("arm", ["real", "synthetic", "weak", "strong", "matched", "filtered", "zero_shot"])
def test_finetune_preset_and_arm_compose(compose_cfg, preset: str, arm: str) -> None:
    cfg = compose_cfg("finetune", [f"experiment={preset}/finetune", f"arm={arm}", "data.synthetic_dir=/syn"])
    assert cfg.arm == arm
    assert cfg.data.augment == {"weak": "weak", "strong": "strong"}.get(arm, "none")
    assert cfg.data.augment_views == 4  # seeded views the embedding cache can reuse (the data layer's job)
    assert "cache_views" not in cfg.model and "augment" not in cfg.model
    assert (cfg.data.num_synthetic == "all") == (arm in ("synthetic", "matched", "filtered"))
    assert cfg.train == (arm != "zero_shot")  # zero-shot: the model as built, no step taken
    assert cfg.data.min_agreement == (0.7 if arm == "filtered" else None)  # the filter arm drops low pairs
    # the cpu preset poses the automatic prompt's task in a tenth of its training prompts, every arm alike, on the
    # pretrained LiteMedSAM at its own 256 px, its encodings on disk for every run of the sweep
    assert cfg.model.full_box_share == (0.1 if preset == "cpu" else 0.0)
    assert cfg.model.sam.model_type == {"paper": "vit_b", "cpu": "lite_medsam"}.get(preset, "tiny")
    if preset == "cpu":
        assert cfg.model.sam.checkpoint == "pretrained" and cfg.data.image_size == 256
        assert cfg.model.cache.storage == "disk"
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric == "val/dice"


def test_local_settings_are_picked_up_and_chosen_by_name(tmp_path: Path) -> None:
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fetalgen.cli import CONFIG_DIR

    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "local" / "default.yaml").write_text("# @package _global_\nseed: 7\n")
    (conf / "local" / "other.yaml").write_text("# @package _global_\nseed: 9\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for name in ("finetune", "train_diffusion", "sample", "evaluate", "split"):
            assert compose(name).seed == 7, name
        assert compose("finetune", overrides=["local=other"]).seed == 9
    GlobalHydra.instance().clear()
