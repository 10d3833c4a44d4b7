"""``dynamat data download|path``: fetch and locate the public DynaMat v1.0 reference file."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dynamat.download import (
    CACHE_ENV,
    DEFAULT_TIMEOUT_S,
    REFERENCE_FILENAME,
    REFERENCE_MD5,
    REFERENCE_URL,
    Progress,
    default_reference_path,
    download,
    normalize_md5,
    reference_cache_path,
)
from dynamat.errors import DynamatError


from dynamat.cli.errors import OneLineGroup as _DataGroup  # noqa: E402


def _md5_option(ctx, param, value):
    if value is None:
        return REFERENCE_MD5
    try:
        return normalize_md5(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group("data", cls=_DataGroup)
def data_group() -> None:
    """Fetch and locate the public DynaMat v1.0 reference trajectories."""


@data_group.command("download")
@click.option("--url", default=REFERENCE_URL, show_default=True, help="Source URL (e.g. a mirror).")
@click.option("--md5", "md5", default=None, callback=_md5_option, metavar="HEX|none",
              help=f"Expected md5 [default: {REFERENCE_MD5}]; 'none' skips the check.")
@click.option("--dest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"Target file [default: CACHE/{REFERENCE_FILENAME}, CACHE being ${CACHE_ENV} "
                   "or ~/.cache/dynamat].")
@click.option("--force", is_flag=True, help="Fetch again even if the file is cached (drops any .part).")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              help="Seconds to wait on a stalled connection.")
def download_command(url: str, md5: str | None, dest: Path | None, force: bool, timeout: float) -> None:
    """Download the reference HDF5 into the cache (resumable, md5-checked); prints its path."""
    dest = dest or reference_cache_path()
    log = lambda msg: click.echo(f"dynamat: {msg}", err=True)  # noqa: E731
    if md5 is None:
        log("warning: --md5 none: the file's checksum will not be checked")
    log(f"fetching {url}")
    log(f"      -> {dest}")
    path = download(url, dest, md5, progress=Progress(sys.stderr),
                    force=force, timeout=timeout, log=log)
    click.echo(str(path))


@data_group.command("path")
def path_command() -> None:
    """Print the path of the downloaded reference file (error if it is not downloaded)."""
    path = default_reference_path()
    if path is None:
        raise DynamatError(f"no reference file at {reference_cache_path()}; run `dynamat data download` first")
    click.echo(str(path))
