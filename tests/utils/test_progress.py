"""Progress under a step budget: one bar over the optimizer steps (whole lines outside a terminal), with the
validation metrics on it."""

import pytest

from fetalgen.tasks.finetune import finetune


def test_the_training_bar_counts_steps_of_the_budget_not_batches_of_an_epoch(compose_cfg, capsys):
    cfg = compose_cfg("finetune", ["logger=none", "trainer.max_steps=6", "trainer.val_check_interval=3",
                                   "model.sam.image_size=64", "data.image_size=64", "test_split=false",
                                   "test_sets=null"])  # fmt: skip
    finetune(cfg)
    out = capsys.readouterr().out
    last = [line for line in out.splitlines() if line.startswith("step ")][-1]
    assert last.startswith("step 6/6 (100%)") and "val/dice 0." in last  # outside a terminal: whole lines
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
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert steps[-1].startswith("step 200/200 (100%)") and 45 <= len(steps) <= 55  # 262 redraws before
    assert "\r" not in out and all(
        "steps/s" in line and "train/loss" in line for line in steps[1:]
    )  # whole lines


def test_on_a_terminal_it_is_a_bar_elsewhere_lines():
    from fetalgen.utils.progress import StepProgressBar

    assert not StepProgressBar(lines=False).init_train_tqdm().disable
    assert (
        StepProgressBar(lines=True).init_train_tqdm().disable
        and StepProgressBar(lines=True).init_sanity_tqdm().disable
    )
