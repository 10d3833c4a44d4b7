"""Every model's Matbench export has a file of its own, even where two names make the same file name."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from dynamat.cli import cli
from dynamat.report import write_synthetic_results


def _report(*args):
    return CliRunner().invoke(cli, ["report", *map(str, args)])


@pytest.mark.parametrize("names", [("my:model", "my-model"), ("MyModel", "mymodel")])
def test_models_of_one_export_file_name_each_get_their_own(tmp_path, names):
    """``my:model`` and ``my-model`` both make ``my-model.yml`` (and on a case-blind file system ``MyModel.yml``
    is ``mymodel.yml``): each gets a stable hash suffix, its file holds its own block; a model whose name is
    no one else's keeps the plain name."""
    models = [(names[0], 1, 1000, 1.0), (names[1], 2, 2000, 0.5), ("CHGNet", 1, 412_525, 0.8)]
    results = write_synthetic_results(tmp_path / "r", models=models, exploded=(), curves=False)
    out = tmp_path / "out"
    r = _report(results, "--out", out, "--no-pdf")
    assert r.exit_code == 0, r.output
    ymls = sorted((out / "matbench").glob("*.yml"))
    assert len(ymls) == 3
    assert (out / "matbench" / "CHGNet.yml").is_file()
    held = {json.loads(p.read_text().split("model_name: ", 1)[1].splitlines()[0]): p.name for p in ymls}
    assert set(held) == {*names, "CHGNet"}
    assert len({n.lower() for n in held.values()}) == 3
    # the same name whatever the order of the models, and on a second run
    from dynamat.report.matbench import export_names

    assert export_names(list(reversed(held))) == held
    shutil.rmtree(out)
    assert _report(results, "--out", out, "--no-pdf").exit_code == 0
    assert sorted(p.name for p in (out / "matbench").glob("*.yml")) == sorted(held.values())
