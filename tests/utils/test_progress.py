"""Progress under a step budget: one bar over the optimizer steps, with the validation metrics on it."""

from fetalgen.segmentation.finetune import finetune


def test_the_training_bar_counts_steps_of_the_budget_not_batches_of_an_epoch(compose_cfg, capsys):
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_steps=6", "trainer.val_check_interval=3",
                                   "model.sam.image_size=64", "data.image_size=64", "test_split=false",
                                   "test_sets=null"])  # fmt: skip
    finetune(cfg)
    out = capsys.readouterr().out
    assert "step: 100%" in out and "6/6" in out and "val/dice=" in out
    assert "Epoch " not in out and "\x1b[A" not in out  # no per-epoch bar, no nested bar's cursor-up codes
