"""The live summary of a campaign: one view per pair, the aggregate MD throughput, per-pair timings."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from dynamat.campaign.jobs import read_json, state_path
from dynamat.layout import RunFolder
from dynamat.names import replica_name

ACTIVE_PHASES = ("queued", "starting", "running", "scoring")


@dataclass
class PairView:
    model: str
    system: str
    status: str = "pending"  # pending | running | completed | failed | exploded
    skipped: bool = False
    error: str | None = None
    slurm_job: str | None = None
    proc: subprocess.Popen | None = None
    lost_since: float | None = None
    replica: int | None = None  # the index in a --replicas set; None: a single run

    @property
    def folder(self) -> str:
        """The run folder's name under the model (``<system>_r<k>`` for replica k >= 1)."""
        return replica_name(self.system, self.replica or 0)

    @property
    def label(self) -> str:
        return f"{self.model}/{self.folder}"


class Summary:
    """Pairs done/running/failed/pending and aggregate MD steps/s, from the tasks' state files."""

    def __init__(self, out: Path, pairs: list[PairView], stream=None, every_s: float = 30.0):
        self.out, self.pairs = out, pairs
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = every_s
        self.t0 = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque()
        self.advanced: dict[str, int] = {}
        self.final_read: set[str] = set()
        self.last_key: tuple = ()
        self.last_line = ""
        self.last_print = 0.0
        self.shown = False

    def _steps(self) -> int:
        for p in self.pairs:
            if p.skipped or p.status == "pending":
                continue
            if p.label in self.final_read:
                continue
            if p.status != "running":
                self.final_read.add(p.label)
            st = read_json(state_path(self.out, p.model, p.folder)) or {}
            if st.get("step") is not None and st.get("step0") is not None:
                self.advanced[p.label] = max(0, int(st["step"]) - int(st["step0"]))
        return sum(self.advanced.values())

    def counts(self) -> dict[str, int]:
        c = {k: 0 for k in ("done", "running", "failed", "pending", "exploded", "skipped")}
        for p in self.pairs:
            if p.status == "completed":
                c["done"] += 1
            elif p.status in c:
                c[p.status] += 1
            c["skipped"] += p.skipped
        return c

    def line(self) -> str:
        now = time.monotonic()
        total = self._steps()
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > 15.0:
            self.samples.popleft()
        (ta, sa), (tb, sb) = self.samples[0], self.samples[-1]
        rate = (sb - sa) / (tb - ta) if tb > ta else 0.0
        mean = total / (now - self.t0) if now > self.t0 else 0.0
        c = self.counts()
        el = int(now - self.t0)
        text = (f"[campaign {el // 60:02d}:{el % 60:02d}] {len(self.pairs)} pairs: {c['done']} done"
                + (f" ({c['skipped']} skipped)" if c["skipped"] else "")
                + f", {c['running']} running, {c['failed']} failed, {c['pending']} pending"
                + (f", {c['exploded']} exploded" if c["exploded"] else "")
                + f" | MD {rate:.0f} steps/s now, {mean:.0f} mean, {total} steps")
        return text

    def show(self, force: bool = False) -> None:
        text = self.line()
        now = time.monotonic()
        key = tuple(sorted(self.counts().items()))
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
            self.shown = True
        elif force or key != self.last_key or now - self.last_print >= self.every_s:
            print(text, file=self.stream, flush=True)
            self.last_print = now
        self.last_key = key
        self.last_line = text

    def event(self, msg: str) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
        print(msg, file=self.stream, flush=True)
        if self.tty and self.last_line:
            self.stream.write(self.last_line)
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()


def pair_timings(out: Path, model: str, system: str) -> dict:
    """``system``: the run folder's name (``<system>_r<k>`` for a replica). Per-pair overheads from its state file: queue (submit->task shell), start-up (shell->first MD
    step), MD (first step->MD end), scoring; plus steps advanced, and run.json's steps done and seconds per step (mean, median)."""
    st = read_json(state_path(out, model, system)) or {}
    t = st.get("times") or {}
    rec = read_json(RunFolder.of(out, model, system).run_json) or {}

    def d(a, b):
        return t[b] - t[a] if a in t and b in t else None

    shell = "shell" if "shell" in t else "task"
    return {
        "queue_s": d("submit", shell),
        "python_startup_s": d("shell", "task"),
        "startup_s": d(shell, "first_step"),
        "md_s": d("first_step", "md_end"),
        "scoring_s": d("score_start", "score_end"),
        "task_total_s": d(shell, "score_end"),
        "steps": (st.get("step") or 0) - (st.get("step0") or 0) if st.get("step0") is not None else None,
        "seconds_per_step": rec.get("seconds_per_step_mean"),
        "seconds_per_step_median": rec.get("seconds_per_step_median"),
        "steps_done": rec.get("steps_done"),
        "action": st.get("action"),
        "result": st.get("result"),
    }


def _finished_message(out: Path, p: PairView) -> str:
    t = pair_timings(out, p.model, p.folder)
    parts = [f"{p.label}: {p.status}"]
    if t["steps_done"] is not None:
        sps = t["seconds_per_step_median"]
        parts.append(f"{t['steps_done']} steps" + (f" ({sps * 1e3:.1f} ms/step)" if sps else ""))
    for key, name in (("md_s", "MD"), ("startup_s", "start-up"), ("scoring_s", "scoring"), ("queue_s", "queued")):
        if t[key] is not None and (key != "queue_s" or t[key] >= 0.05):
            parts.append(f"{name} {t[key]:.1f} s")
    if p.error and p.status != "completed":
        parts.append(p.error)
    score = read_json(RunFolder.of(out, p.model, p.folder).score_json) or {}
    notes = score.get("notes") if isinstance(score.get("notes"), list) else []
    said = [f"\n    note: {n}" for n in notes if isinstance(n, str)]  # dynamat score's caveats
    return "  " + ", ".join(parts) + "".join(said)


def _state_result(out: Path, p: PairView) -> tuple[str | None, str | None]:
    """(final status, error) when the pair's task has finished, else (None, None)."""
    st = read_json(state_path(out, p.model, p.folder)) or {}
    if st.get("phase") == "done":
        res = st.get("result") or "failed"
        return (res if res in ("completed", "failed", "exploded") else "failed"), st.get("error")
    if st.get("phase") == "busy":
        return "failed", st.get("error")
    return None, None


