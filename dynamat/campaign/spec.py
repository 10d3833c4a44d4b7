"""What one ``dynamat campaign`` asks for: :class:`CampaignSpec`, built once from the command's
options (:meth:`CampaignSpec.from_options`) and checked in one place (its ``__post_init__``), so
the campaign itself never meets an invalid combination and builds every :class:`Job` from it."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from dynamat.campaign.jobs import Job
from dynamat.errors import DynamatError
from dynamat.names import check_name, model_folder

EXECUTORS = ("local", "slurm")
SOCKET_MODES = ("unix", "inet")


def split_names(csv: str, kind: str) -> list[str]:
    """``"a, b,a"`` -> ``["a", "b"]``: each name checked as one safe path component (dynamat/names.py);
    a model may also be ``MODULE:CALLABLE`` (its folder ``MODULE@CALLABLE``)."""
    seen: list[str] = []
    for x in csv.split(","):
        x = x.strip()
        if x and x not in seen:
            if kind == "model":
                model_folder(x)  # a name, or MODULE:CALLABLE checked as its folder MODULE@CALLABLE
            else:
                check_name(kind, x)
            seen.append(x)
    if not seen:
        raise DynamatError(f"no {kind}s given")
    return seen


def per_model_all(items: tuple[str, ...], models: list[str], flag: str, *, sole_model_default: bool = False
                  ) -> dict[str, list[str]]:
    """``("m=value", ...)`` -> ``{m: [value, ...]}`` in the given order; every ``m`` must be one of ``models``.
    ``sole_model_default``: with one model, an item that starts with a KEY (a Python identifier, which
    no MODULE:CALLABLE is) other than its name is that model's value (``--model-option KEY=VALUE`` as
    ``dynamat run`` takes it)."""
    out: dict[str, list[str]] = {}
    for it in items:
        head = it.partition("=")[0].strip()
        if sole_model_default and len(models) == 1 and head.isidentifier() and head != models[0]:
            out.setdefault(models[0], []).append(it.strip())
            continue
        m, sep, val = it.partition("=")
        if not sep or not m.strip() or not val.strip():
            raise DynamatError(f"{flag} wants MODEL=VALUE, got {it!r}")
        if m.strip() not in models:
            raise DynamatError(f"{flag} names model {m.strip()!r}, which is not in --models")
        out.setdefault(m.strip(), []).append(val.strip())
    return out


def per_model(items: tuple[str, ...], models: list[str], flag: str) -> dict[str, str]:
    """``("m=value", ...)`` -> ``{m: value}`` (the last value of a model given twice)."""
    return {m: vals[-1] for m, vals in per_model_all(items, models, flag).items()}


def _is_dependency(sbatch_arg: str) -> bool:
    """An ``#SBATCH`` option that holds the array back until other jobs end (``--dependency=...``, ``-d ...``)."""
    return re.match(r"(--dependency\b|-d\b|-d\S)", sbatch_arg.strip()) is not None


@dataclass(frozen=True)
class CampaignSpec:
    """The model x system matrix and how to run it. ``out`` and ``reference`` are made absolute
    (tasks run in other folders, possibly on other nodes); ``reference=None`` is the bundled demo file."""

    models: tuple[str, ...]
    systems: tuple[str, ...]
    out: Path
    reference: Path | None = None
    executor: str = "local"  # local | slurm
    jobs: int | None = None  # local: tasks at a time [1]; slurm: array tasks running at once [no limit]
    steps: int | None = None  # MD steps per pair; None with time_ps None: the protocol's full length
    time_ps: float | None = None  # MD length in ps, converted with each system's time step
    seed: int = 12345
    max_retries: int = 2
    driver_env: Mapping[str, str] = field(default_factory=dict)  # model -> its driver command
    driver_args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # model -> extra driver arguments
    driver_model: Mapping[str, str] = field(default_factory=dict)  # model -> the driver's --model (a models file's)
    socket_mode: str = "unix"  # unix | inet
    partition: str | None = None  # slurm only, like the five below
    gpus_per_task: int | None = None
    cpus_per_task: int = 2
    time_limit: str | None = None
    sbatch_args: tuple[str, ...] = ()
    template: Path | None = None
    inet_nodes: int = 2
    wait: bool = True  # slurm: False returns after submission
    report: bool = True
    poll_s: float | None = None  # None: 0.5 s locally, 2 s for squeue
    pack: int = 1  # pairs of one model per task, sharing one driver
    replicas: int = 1  # runs per (model, system), seeds seed + k (dynamat.replicas)
    #: ``--ensemble npt --pressure-GPa P [--barostat B] [--tau-barostat-fs T]`` for every pair (get_system's
    #: keywords); empty: each system's own (fixed cell, or its reference's NPT: get_system); knobs without
    #: ``ensemble`` adjust each reference's own barostat
    ensemble: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise DynamatError(f"unknown executor {self.executor!r}")
        if self.socket_mode not in SOCKET_MODES:
            raise DynamatError(f"unknown socket mode {self.socket_mode!r}")
        if self.steps is not None and self.time_ps is not None:
            raise DynamatError("give --steps or --time-ps, not both")
        if self.steps is not None and self.steps <= 0 or self.time_ps is not None and self.time_ps <= 0:
            raise DynamatError("--steps and --time-ps must be positive")
        if self.max_retries < 0:
            raise DynamatError("--max-retries must be >= 0")
        if self.jobs is not None and self.jobs < 1:
            raise DynamatError("--jobs must be >= 1")
        if self.pack < 1:
            raise DynamatError("--pack must be >= 1")
        from dynamat.replicas import check_replicas

        check_replicas(self.replicas)
        if self.pack > 1 and self.socket_mode != "unix":
            raise DynamatError("--pack shares one driver between runs on one node: use it with --socket unix")
        from dynamat.catalogue import check_ensemble

        check_ensemble({k: v for k, v in self.ensemble.items() if v is not None})
        from dynamat.layout import check_out_folder
        from dynamat.reference import default_reference

        check_out_folder(self.out)  # not only when the first pair has run (or _campaign is made)

        # frozen: the normalised values are set once, here
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "systems", tuple(self.systems))
        object.__setattr__(self, "out", Path(self.out).resolve())
        object.__setattr__(self, "reference", Path(self.reference or default_reference()).resolve())
        object.__setattr__(self, "driver_env", MappingProxyType(dict(self.driver_env)))
        object.__setattr__(self, "driver_args", MappingProxyType({m: tuple(a) for m, a in self.driver_args.items()}))
        object.__setattr__(self, "driver_model", MappingProxyType(dict(self.driver_model)))
        object.__setattr__(self, "sbatch_args", tuple(self.sbatch_args))
        object.__setattr__(self, "ensemble", MappingProxyType({k: v for k, v in self.ensemble.items() if v is not None}))

    @classmethod
    def from_options(cls, models: str, systems: str, driver_env: tuple[str, ...] = (),
                     driver_args: tuple[str, ...] = (), models_file: Path | None = None,
                     dispersion: tuple[str, ...] = (), model_options: tuple[str, ...] = (),
                     **options) -> CampaignSpec:
        """From the command line's text: comma-separated names and ``MODEL=VALUE`` items.
        ``models_file``: a user's models (:mod:`dynamat.models_file`); ``dispersion``: driver
        arguments every model gets (``--dispersion``), except one whose table names its own;
        ``model_options``: ``MODEL=KEY=VALUE`` items, a model's ``--model-option KEY=VALUE``."""
        from dynamat.known_models import check_model_known, check_model_options
        from dynamat.models_file import model_option_args, read_models_file, serve

        model_list = split_names(models, "model")
        system_list = split_names(systems, "system")
        env = per_model(driver_env, model_list, "--driver-env")
        entries = read_models_file(models_file) if models_file else {}
        args = {}
        for m, text in per_model(driver_args, model_list, "--driver-args").items():
            try:
                args[m] = tuple(shlex.split(text))
            except ValueError as exc:  # an unbalanced quote
                raise DynamatError(f"--driver-args for {m}: {exc} in {text!r}") from None
        given = per_model_all(model_options, model_list, "--model-option", sole_model_default=True)
        # behind a SLURM dependency (a fine-tuning job), a path: file may be that job's to make: each pair's
        # driver checks it when the array task starts
        later = options.get("executor") == "slurm" and any(_is_dependency(a) for a in options.get("sbatch_args") or ())
        opts = {m: model_option_args(v, must_exist=not later) for m, v in given.items()}
        served = {}
        for m in model_list:
            e = entries.get(m)
            if e is not None and e.dispersion and dispersion:
                raise DynamatError(f"model {m!r} has dispersion = {e.dispersion!r} in {models_file}; drop --dispersion")
            how = serve(m, entries, env.get(m))  # as `dynamat run --models-file` serves it
            check_model_known(m, tuple(entries), how.driver_cmd)  # a typo fails here, not in every pair
            if how.entry is not None:
                served[m] = how.driver_model
                if how.driver_cmd:
                    env[m] = how.driver_cmd
            # after the table's own options, so a command-line option wins as it does for `dynamat run`
            extra = how.driver_args + opts.get(m, ()) + tuple(dispersion)
            if extra:
                args[m] = extra + args.get(m, ())
            check_model_options(how.driver_model, args.get(m, ()))
        return cls(models=tuple(model_list), systems=tuple(system_list), driver_env=env, driver_args=args,
                   driver_model=served, **options)

    def slurm_only_options(self) -> list[str]:
        """The options given that only ``--executor slurm`` uses (empty for slurm)."""
        if self.executor == "slurm":
            return []
        return [name for name, v in (("--partition", self.partition), ("--gpus-per-task", self.gpus_per_task),
                                     ("--time-limit", self.time_limit), ("--sbatch-arg", self.sbatch_args),
                                     ("--template", self.template), ("--no-wait", not self.wait)) if v]

    def job(self, model: str, system: str, steps: int | None, replica: int | None = None) -> Job:
        """The job of one pair, or of replica ``replica`` of it (seed + replica); index and task are
        numbered once the job list is complete."""
        from dynamat.runner import MAX_SEED

        return Job(index=0, model=model, system=system, reference=str(self.reference), out=str(self.out),
                   steps=steps, seed=(self.seed + (replica or 0)) % (MAX_SEED + 1), max_retries=self.max_retries,
                   socket=self.socket_mode, driver_cmd=self.driver_env.get(model),
                   driver_args=self.driver_args.get(model, ()), driver_model=self.driver_model.get(model),
                   replica=replica, ensemble=dict(self.ensemble))
