"""Replicas: R independent MLIP trajectories of one (model, system), each an ordinary run folder.

Replica 0 is the single run's folder ``<out>/<model>/<system>``; replica k >= 1 is ``<system>_r<k>``
(:func:`dynamat.names.replica_name`). Their seeds are distinct and recorded in each run.json: with
``--seed S`` replica k uses S + k; without it, a replica that has a run.json keeps its recorded seed
and a new one uses (replica 0's seed, recorded or drawn now) + k. All replicas start from the same
reference frame with velocities drawn from their own seed, so they decorrelate within a few
thermostat times; scoring aggregates them (:mod:`dynamat.scoring.replicas`).

A rerun of the set does what a rerun of each run does (resume, continue to a larger --steps), except
that a replica already final at the asked length (completed, or exploded: a result) is kept and
named, not refused, so a set interrupted half-way finishes with the same command.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dynamat.errors import DynamatError
from dynamat.layout import RunFolder
from dynamat.names import REPLICA_TAG, replica_name

MAX_REPLICAS = 1000


@dataclass(frozen=True)
class ReplicaRun:
    """One replica to run: its system, index, seed, and why it is kept as it is (None: run it)."""

    system: str
    replica: int
    seed: int
    keep: str | None = None  # "completed" | "exploded": final at the asked length, left alone

    @property
    def label(self) -> str:
        return replica_name(self.system, self.replica)


def check_replicas(replicas: int) -> int:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise DynamatError(f"--replicas must be an integer between 1 and {MAX_REPLICAS}, got {replicas!r}")
    return replicas


def _recorded(run_dir: Path) -> dict:
    try:
        rec = json.loads(RunFolder(run_dir).run_json.read_text())
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def further_replicas(out: Path, model: str, system: str, replicas: int) -> list[Path]:
    """Run folders of replicas k >= ``replicas`` of (model, system): left by an earlier, larger set
    (run.json names the system and k), the report would average them with the new runs."""
    model_dir = RunFolder.of(out, model, system).path.parent
    if not model_dir.is_dir():
        return []
    found = []
    for d in model_dir.iterdir():
        tail = d.name[len(system) + len(REPLICA_TAG):] if d.name.startswith(system + REPLICA_TAG) else ""
        if re.fullmatch(r"[1-9][0-9]{0,5}", tail) and int(tail) >= replicas:
            rec = _recorded(d)
            if rec.get("system") == system and rec.get("replica") == int(tail):
                found.append((int(tail), d))
    return [d for _, d in sorted(found)]


def check_no_further_replicas(out: Path, model: str, system: str, replicas: int) -> None:
    """--overwrite replaces a set of ``replicas`` runs: refused (nothing removed) where replicas of an
    earlier, larger set would stay beside them and be averaged with them by the report."""
    left = further_replicas(out, model, system, replicas)
    if left:
        n = int(left[-1].name.rsplit(REPLICA_TAG, 1)[1]) + 1
        names = ", ".join(d.name for d in left[:3]) + (" ..." if len(left) > 3 else "")
        raise DynamatError(f"{left[0].parent} holds {names} of an earlier set of {n} replicas, which reports would "
                           f"average with the new runs; pass --replicas {n} to redo the whole set, or move "
                           f"{'them' if len(left) > 1 else 'it'} away")


def replica_seeds(out: Path, model: str, system: str, replicas: int, seed: int | None,
                  overwrite: bool = False) -> list[int]:
    """The seed of each replica (see the module docstring); distinct for distinct k."""
    from dynamat.runner import MAX_SEED, run_seed

    check_replicas(replicas)
    base = run_seed(RunFolder.of(out, model, system, 0).path, seed, overwrite)
    seeds = []
    for k in range(replicas):
        own = None if seed is not None or overwrite else _recorded(RunFolder.of(out, model, system, k).path).get("seed")
        seeds.append(own if isinstance(own, int) and 0 <= own <= MAX_SEED else (base + k) % (MAX_SEED + 1))
    return seeds


def plan_replicas(model: str, systems: list[str], reference, out: Path, replicas: int, *, seed: int | None,
                  overwrite: bool, steps: int | None, time_ps: float | None = None,
                  overrides: dict | None = None, nbeads: int = 1, engine: str = "ipi",
                  identity: dict) -> list[ReplicaRun]:
    """Every replica of every system, with its seed and whether it is kept as it is (``nbeads``, ``engine``:
    how the set runs, and ``identity``, the served model (:func:`dynamat.runner.model_identity`), which a
    kept replica must have run with)."""
    from dynamat.reference import load_system, start_atoms
    from dynamat.runner import check_continues, final_at, run_settings, steps_for, system_record

    plan = []
    for system in systems:
        for k in range(check_replicas(replicas)):
            RunFolder.of(out, model, system, k)  # every name checked before anything is read
        if overwrite:
            check_no_further_replicas(out, model, system, replicas)
        ref_path, entry, _ = load_system(reference, system, **(overrides or {}))
        want = steps_for(entry, steps, time_ps) or entry.protocol.steps
        info = None  # the system as a kept replica must have run it: its start frame read once, if any is kept
        for k, s in enumerate(replica_seeds(out, model, system, replicas, seed, overwrite)):
            rec = {} if overwrite else _recorded(RunFolder.of(out, model, system, k).path)
            keep = final_at(rec, want)
            if keep:  # kept as it is only where it is the run asked for: else two replicas could be one
                run_dir = RunFolder.of(out, model, system, k).path
                if rec.get("seed") != s:
                    raise DynamatError(f"{run_dir} holds a run with seed {rec.get('seed')}, not {s} (--seed + {k}): "
                                       "leave --seed out to go on with the recorded seeds, give another --out, "
                                       "or --overwrite")
                info = info or system_record(entry, start_atoms(ref_path, entry, entry.start_frame))
                check_continues(run_dir, rec, run_settings(entry, engine, nbeads, want, s)[1], engine, identity, info)
            plan.append(ReplicaRun(system, k, s, keep))
    return plan
