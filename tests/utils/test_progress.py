"""Progress under a step budget: one bar over the optimizer steps, with the validation metrics on it."""

import pytest

from fetalgen.segmentation.finetune import finetune


def test_the_training_bar_counts_steps_of_the_budget_not_batches_of_an_epoch(compose_cfg, capsys):
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_steps=6", "trainer.val_check_interval=3",
                                   "model.sam.image_size=64", "data.image_size=64", "test_split=false",
                                   "test_sets=null"])  # fmt: skip
    finetune(cfg)
    out = capsys.readouterr().out
    assert "step: 100%" in out and "6/6" in out and "val/dice=" in out
    assert "Epoch " not in out and "\x1b[A" not in out  # no per-epoch bar, no nested bar's cursor-up codes


@pytest.mark.slow
def test_in_a_pipe_the_bar_redraws_about_fifty_times_a_run(compose_cfg, capsys):
    from fetalgen.utils.progress import refresh_rate

    assert refresh_rate(60_000, interactive=False) == 1200 and refresh_rate(60_000, interactive=True) == 1
    assert refresh_rate(10, interactive=False) == 1
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_steps=200", "trainer.val_check_interval=100",
                                   "model.sam.image_size=64", "data.image_size=32", "test_split=false",
                                   "test_sets=null", "data.num_real=4", "data.num_val=2"])  # fmt: skip
    finetune(cfg)  # pytest's captured output is no terminal
    out = capsys.readouterr().out
    redraws = out.count("it/s")
    assert "200/200" in out and redraws <= 70  # 50 updates and the set-up bars; 262 before (each step, twice)
