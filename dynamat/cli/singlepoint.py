"""``dynamat singlepoint``: energy and force errors (Eq. 1-2) on labelled reference frames."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.cli.common import (dispersion_options, driver_options, emit, model_option,
                                models_file_option, reference_option, served_model, system_option, with_options)
from dynamat.known_models import check_model_options
from dynamat.layout import check_file_target
from dynamat.models_file import dispersion_args, model_option_args
from dynamat.names import model_folder
from dynamat.singlepoint import ENERGY_REFERENCES, run_singlepoint


@click.command()
@click.option("--model", required=True, help="Model name (see `dynamat models`), or MODULE:CALLABLE returning an ASE calculator, or a --models-file name.")
@model_option
@models_file_option
@system_option
@reference_option
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, help="Use every K-th reference frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Use at most this many frames.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@click.option("--energy-reference", type=click.Choice(ENERGY_REFERENCES), default="auto", show_default=True,
              help="Eq. 1 across codes: isolated (both sides minus their isolated atoms, the paper's), absolute "
                   "(raw, same code only), fluctuation (mean-subtracted); auto: isolated when the file has "
                   "isolated-atom energies, else fluctuation.")
@with_options(driver_options)
@with_options(dispersion_options)
def singlepoint(model, model_options, models_file, system, reference, every, max_frames, batch_size, json_out, energy_reference,
                driver_cmd, driver_args, dispersion, dispersion_functional):
    """Energy and force RMSE (paper Eq. 1-2) of MODEL on the labelled reference frames of SYSTEM."""
    model_folder(model)  # a name or MODULE:CALLABLE, never an option to the driver
    if json_out is not None:
        check_file_target(json_out, "--json", ours=lambda raw: "n_frames_singlepoint" in raw)
    served = served_model(model, models_file, driver_cmd, dispersion)
    driver_args = (tuple(driver_args) + served.driver_args + model_option_args(model_options)
                   + dispersion_args(dispersion, dispersion_functional))
    check_model_options(served.driver_model, driver_args)
    res = run_singlepoint(served.driver_model, reference, system, every, max_frames, batch_size, served.driver_cmd,
                          driver_args,
                          progress=lambda j, n: click.echo(f"  singlepoint {model}/{system}: {j}/{n} frames", err=True),
                          energy_reference=energy_reference)
    res.update(model=model, system=system)
    if dispersion:  # as run.json records it (the driver lower-cases the functional)
        res["dispersion"] = f"{dispersion}({(dispersion_functional or 'pbe').strip().lower()})"
    if served.entry is not None:
        e = served.entry
        res.update(model_label=e.label or e.name, tier=e.tier, n_params=e.n_params, calculator=e.calculator)
        if e.dispersion:
            res["dispersion"] = e.dispersion.lower() if "(" in e.dispersion else f"{e.dispersion}(pbe)"
    emit(res, json_out)
