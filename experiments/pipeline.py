"""Steps shared by the pipeline scripts (demo, reproduce-paper): run an entry point, time it, keep its log."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ENTRY_POINTS = {
    "fetalgen-split": "fetalgen.cli.split",
    "fetalgen-train-diffusion": "fetalgen.cli.train_diffusion",
    "fetalgen-sample": "fetalgen.cli.sample",
    "fetalgen-finetune": "fetalgen.cli.finetune",
    "fetalgen-pseudo-label": "fetalgen.cli.pseudo_label",
    "fetalgen-export": "fetalgen.cli.export",
    "fetalgen-predict": "fetalgen.cli.predict",
}


class StepFailed(RuntimeError):
    """A pipeline step exited non-zero; the message holds the command and the end of its log."""


def run_step(
    title: str, command: str, args: Sequence[str], log_dir: Path, done: Callable[[], bool] | None = None
) -> float:
    """Run ``command args`` (an entry point of :data:`ENTRY_POINTS`) with this interpreter; when ``done()`` says
    the step's outputs are already there and verify (a re-run after a crash), skip it instead.

    The step's whole output goes to ``<log_dir>/<command>.log`` (appended); the terminal shows it live, in
    short: fetalgen's and Hydra's log lines, errors, and progress bars on one line that updates in place.

    Returns:
        Wall time of the step in seconds.

    Raises:
        StepFailed: the step exited non-zero.
    """
    if done is not None and done():
        print(f"==> {title}\n    done before (its outputs verify): skipped", flush=True)
        return 0.0
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{command}.log"
    argv = [sys.executable, "-m", ENTRY_POINTS[command], *args]
    shown = " ".join([command, *args])
    print(f"==> {title}\n    $ {shown}", flush=True)
    start = time.perf_counter()
    with open(log, "ab") as out:
        out.write(f"\n$ {shown}\n".encode())
        out.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        live = LiveView()
        for chunk in iter(lambda: proc.stdout.read1(1 << 14), b""):
            out.write(chunk)
            live.feed(chunk.decode(errors="replace"))
        live.close()
        code = proc.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise StepFailed(f"step '{title}' failed (exit {code}); log: {log}\n{tail}")
    print(f"    done in {seconds:.0f} s (log: {log})", flush=True)
    return seconds


class LiveView:
    """What the terminal shows of a step's output: key lines, and progress bars (``\\r`` updates) in place."""

    KEEP = re.compile(r"\[fetalgen\.|\[HYDRA\]|Error|Traceback|NOTE|WARNING.*fetalgen")

    def __init__(self) -> None:
        self.partial = ""
        self.status = False  # a progress line is showing

    def feed(self, text: str) -> None:
        self.partial += text
        *parts, self.partial = re.split(r"(\r|\n)", self.partial)
        for segment, end in zip(parts[::2], parts[1::2], strict=True):
            if end == "\r" and segment.strip():
                self._show(f"\r    | {segment.strip()[:110]:<110}", status=True)
            elif end == "\n" and self.KEEP.search(segment):
                back = "\r" if self.status else ""
                self._show(f"{back}    | {segment.strip()[:200]:<110}\n", status=False)

    def _show(self, text: str, status: bool) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.status = status

    def close(self) -> None:
        if self.status:
            sys.stdout.write("\n")
            self.status = False


def sweep_done(sweep_dir: Path, overrides: Sequence[str]) -> bool:
    """Whether every job of a multirun over ``overrides`` (``key=a,b,c`` sweeps a key) left its ``metrics.json``
    in ``sweep_dir/<job number>/``."""
    jobs = 1
    for item in overrides:
        key, _, value = str(item).partition("=")
        if "," in value and "${" not in value and not value.startswith("["):
            jobs *= len(value.split(","))
    return all((sweep_dir / str(i) / "metrics.json").is_file() for i in range(jobs))
