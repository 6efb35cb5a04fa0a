"""Progress bars for every loop of fetalgen (sampling, judging, evaluating, predicting, labelling, downloading):
a tqdm bar on a terminal; where the output is a pipe or a file (a SLURM ``.out``, a CI log) no bar to redraw, but
whole lines, about :data:`PIPE_UPDATES` per loop whatever its length, so log lines never land on a bar's line and
a long run does not write megabytes of ``\\r`` redraws."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm
from tqdm.auto import tqdm as interactive_tqdm

PIPE_UPDATES = 50  # lines per loop when the output is a pipe or a file


class LineBar(tqdm):
    """A tqdm that writes each refresh as one whole line (no ``\\r``), refreshed every ``miniters`` steps."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == "":  # tqdm clearing a bar that is not left: nothing was drawn in place
            return True
        self.fp.write((msg if msg is not None else str(self)) + "\n")
        self.fp.flush()
        return True

    def close(self) -> None:
        """The last line (unless the last refresh wrote it); none of tqdm's clearing of a bar drawn in place."""
        if self.disable:
            return
        if self.n != self.last_print_n:
            self.display()
        self.disable = True  # what tqdm's own close does first, without the ``\r`` it then writes
        self._decr_instances(self)


def progress_bar(
    total: int | None,
    desc: str,
    unit: str = "it",
    disable: bool = False,
    interactive: bool | None = None,
    **kwargs: Any,
) -> tqdm:
    """The bar of a loop of ``total`` steps (module doc); ``interactive`` None: whether stderr is a terminal."""
    if interactive is None:
        interactive = sys.stderr.isatty()
    if interactive:
        return interactive_tqdm(total=total, desc=desc, unit=unit, disable=disable, **kwargs)
    if not total:  # an unknown length (a download without Content-Length): a line every half minute
        return LineBar(total=total, desc=desc, unit=unit, disable=disable, mininterval=30, **kwargs)
    every = max(1, int(total) // PIPE_UPDATES)
    return LineBar(
        total=total, desc=desc, unit=unit, disable=disable, miniters=every, mininterval=0, **kwargs
    )
