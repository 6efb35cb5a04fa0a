"""Steps shared by the pipeline scripts (demo, reproduce-paper): run an entry point, time it, keep its log."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ENTRY_POINTS = {
    "fetalgen-split": "fetalgen.cli.split",
    "fetalgen-train-diffusion": "fetalgen.cli.train_diffusion",
    "fetalgen-sample": "fetalgen.cli.sample",
    "fetalgen-finetune": "fetalgen.cli.finetune",
}


class StepFailed(RuntimeError):
    """A pipeline step exited non-zero; the message holds the command and the end of its log."""


def run_step(title: str, command: str, args: Sequence[str], log_dir: Path) -> float:
    """Run ``command args`` (an entry point of :data:`ENTRY_POINTS`) with this interpreter.

    The step's output goes to ``<log_dir>/<command>.log`` (appended); a one-line status is printed.

    Returns:
        Wall time of the step in seconds.

    Raises:
        StepFailed: the step exited non-zero.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{command}.log"
    argv = [sys.executable, "-m", ENTRY_POINTS[command], *args]
    shown = " ".join([command, *args])
    print(f"==> {title}\n    $ {shown}", flush=True)
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {shown}\n")
        out.flush()
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise StepFailed(f"step '{title}' failed (exit {code}); log: {log}\n{tail}")
    print(f"    done in {seconds:.0f} s (log: {log})", flush=True)
    return seconds
