"""Every loop's bar: a bar on a terminal; whole lines, about fifty a loop, where the output is a pipe or a file."""

import io

from tqdm import tqdm

from fetalgen.utils.bars import PIPE_UPDATES, LineBar, progress_bar


def test_in_a_pipe_a_loop_of_any_length_writes_about_fifty_whole_lines():
    for total in (7, 1000, 60_000):
        out = io.StringIO()
        with progress_bar(total, "judge", "img", interactive=False, file=out) as bar:
            for _ in range(total):
                bar.update(1)
            bar.set_postfix_str("features")  # a change of stage is a line too
        text = out.getvalue()
        assert "\r" not in text and text.endswith("\n")
        lines = text.splitlines()
        assert (
            len(lines) <= PIPE_UPDATES + 4
            and lines[-1].startswith("judge: 100%|")
            and f"{total}/{total}" in lines[-1]
        )


def test_on_a_terminal_it_is_tqdms_bar_and_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    bar = progress_bar(10, "predict", "img", interactive=True, file=out)
    assert isinstance(bar, tqdm) and not isinstance(bar, LineBar)
    bar.close()
    quiet = io.StringIO()
    with progress_bar(10, "predict", "img", disable=True, interactive=False, file=quiet) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""


def test_a_download_of_unknown_length_writes_a_line_at_its_start_and_end():
    out = io.StringIO()
    with progress_bar(None, "hc18.zip", "B", interactive=False, file=out, unit_scale=True) as bar:
        for _ in range(500):
            bar.update(1 << 20)
    assert 1 <= len(out.getvalue().splitlines()) <= 3
