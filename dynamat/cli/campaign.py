"""``dynamat campaign`` and ``dynamat campaign-task`` (what each SLURM array task runs)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from dynamat.campaign.jobs import task_main
from dynamat.cli.common import (dispersion_options, ensemble_options, models_file_option,
                                protocol_overrides, seed_option, with_options)
from dynamat.campaign.run import run_campaign
from dynamat.campaign.spec import CampaignSpec
from dynamat.models_file import dispersion_args

@click.command("campaign")
@click.option("--models", required=True, help="Comma-separated model names, as dynamat-driver knows them, "
              "MODULE:CALLABLE returning an ASE calculator (folder MODULE@CALLABLE), or --models-file names.")
@models_file_option
@click.option("--model-option", "model_options", multiple=True, metavar="MODEL=KEY=VALUE",
              help="Option of one model, as `dynamat run --model MODEL --model-option KEY=VALUE` (repeatable), "
                   "e.g. ase.calculators.lj:LennardJones=sigma=2.3; with one model in --models, KEY=VALUE is enough.")
@click.option("--systems", required=True, help="Comma-separated system names.")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="DynaMat v1.0 reference HDF5 [default: the bundled demo file].")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--jobs", "-j", type=int, default=None,
              help="local: pairs run at a time [default 1]; slurm: array tasks running at once (%K) [default: no limit].")
@click.option("--steps", type=int, default=None, help="MD steps per pair.")
@click.option("--time-ps", type=float, default=None, help="MD length in ps (steps from each system's time step) "
              "[default, without --steps: the protocol's full 20 ps].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("campaign"), show_default=True)
@seed_option(12345)
@click.option("--max-retries", type=int, default=2, show_default=True,
              help="Retries of a failed run (resumed from its restart point where it can be). Exploded runs are final.")
@click.option("--driver-env", multiple=True, metavar="MODEL=CMD",
              help="Driver command for MODEL from its own environment, e.g. mace-mp-0=/envs/mace/bin/dynamat-driver.")
@click.option("--driver-args", multiple=True, metavar="MODEL=ARGS",
              help="Extra driver arguments for MODEL, e.g. mace-mp-0='--device cuda'.")
@click.option("--socket", "socket_mode", type=click.Choice(["unix", "inet"]), default="unix", show_default=True,
              help="inet: the driver connects over TCP through a relay that writes <run_dir>/socket.json; with "
                   "slurm, the driver runs as a second job step on another node (see --inet-nodes).")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--gpus-per-task", type=int, default=None, help="slurm: GPUs per array task.")
@click.option("--cpus-per-task", type=int, default=2, show_default=True, help="slurm: CPUs per array task.")
@click.option("--time-limit", default=None, help="slurm: wall time per task, e.g. 24:00:00.")
@click.option("--sbatch-arg", "sbatch_args", multiple=True, help="slurm: extra #SBATCH option (repeatable), e.g. --account=abc.")
@click.option("--template", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="slurm: sbatch template [default: the packaged campaign_array.sbatch.in, or ..._inet for --socket inet].")
@click.option("--inet-nodes", type=click.IntRange(1, 2), default=2, show_default=True,
              help="slurm --socket inet: nodes per task; 2 puts the driver on the second node, 1 on the same node.")
@click.option("--no-wait", is_flag=True, help="slurm: return after submission.")
@click.option("--pack", type=click.IntRange(1, 256), default=1, show_default=True, metavar="K",
              help="Run up to K pairs of one model as one task whose i-PI runs share one driver process (one model "
              "load, structures batched into shared model calls where the model can; unix sockets).")
@click.option("--replicas", type=click.IntRange(1, 1000), default=1, show_default=True, metavar="R",
              help="R independent runs per (model, system), seeds --seed + k, in <model>/<system> and <system>_r<k>; "
              "scored one by one, aggregated by the report.")
@click.option("--no-report", is_flag=True, help="Do not write <out>/report/ at the end.")
@with_options(dispersion_options)
@with_options(ensemble_options)
@click.option("--poll-s", type=float, default=None, hidden=True)
def campaign_command(models, models_file, model_options, systems, reference, executor, jobs, steps, time_ps, out, seed, max_retries, driver_env,
                     driver_args, socket_mode, partition, gpus_per_task, cpus_per_task, time_limit, sbatch_args,
                     template, inet_nodes, no_wait, pack, replicas, no_report, dispersion, dispersion_functional,
                     ensemble, pressure_GPa, barostat, tau_barostat_fs, poll_s):
    """Run and score every (model, system) pair, locally or as a SLURM job array, then report."""
    spec = CampaignSpec.from_options(
        models, systems, driver_env=driver_env, driver_args=driver_args, models_file=models_file, model_options=model_options,
        dispersion=dispersion_args(dispersion, dispersion_functional), out=out, reference=reference,
        executor=executor, jobs=jobs, steps=steps, time_ps=time_ps, seed=seed, max_retries=max_retries,
        socket_mode=socket_mode, partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
        time_limit=time_limit, sbatch_args=sbatch_args, template=template, inet_nodes=inet_nodes,
        wait=not no_wait, report=not no_report, poll_s=poll_s, pack=pack, replicas=replicas,
        ensemble=protocol_overrides(None, None, None, None, None, None, None, ensemble=ensemble,
                                    pressure_GPa=pressure_GPa, barostat=barostat, tau_barostat_fs=tau_barostat_fs))
    res = run_campaign(spec)
    if res.waited:
        counts = {}
        for p in res.pairs:
            counts[p.status] = counts.get(p.status, 0) + 1
        click.echo(f"campaign done in {res.wall_s:.1f} s: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                   + (f"; report {res.report}" if res.report else ""))


@click.command("campaign-task")
@click.option("--manifest", required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Job list written by `dynamat campaign` (tab-separated, one line per pair).")
@click.option("--index", type=int, envvar="SLURM_ARRAY_TASK_ID", required=True,
              help="Task of the job list: its pairs (one, or a pack) [default: $SLURM_ARRAY_TASK_ID].")
def campaign_task_command(manifest, index):
    """Run and score one task of a campaign, a pair or a pack of pairs (what each SLURM array task runs)."""
    code = task_main(manifest, index, lambda m: click.echo(f"[{time.strftime('%H:%M:%S')}] {m}", err=True))
    sys.exit(code)
