"""The run-folder layout is named in one module, its paths go through the name checks, and the one atomic
writer never leaves half a file."""

import ast
from pathlib import Path

import pytest

import dynamat
from dynamat import layout
from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic
from dynamat.layout import CampaignTree, RunFolder
from dynamat.names import RESERVED

PACKAGE = Path(dynamat.__file__).parent


def test_run_folder_is_out_model_system_checked(tmp_path):
    rf = RunFolder.of(tmp_path, "emt", "bulkCu_300K")
    assert rf.path == (tmp_path / "emt" / "bulkCu_300K").resolve()
    assert rf.run_json.parent == rf.path and rf.score_json.name == "score.json"
    assert CampaignTree(tmp_path).run("emt", "bulkCu_300K") == rf
    for model, system in (("..", "x"), ("emt", "../../etc"), ("emt", "report"), ("_campaign", "x"), ("-rf", "x")):
        with pytest.raises(DynamatError, match="cannot be used as a folder name"):
            RunFolder.of(tmp_path, model, system)


def test_campaign_folders_are_the_reserved_names():
    assert {layout.CAMPAIGN_DIR, layout.REPORT_DIR} == RESERVED


def test_no_module_names_a_run_folder_file_itself():
    """A file name of the layout written as a literal elsewhere is a second copy that can drift."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and ("." in v or v == "RESTART")}
    assert {"run.json", "score.json", "curves.npz", "RESTART", ".lock"} <= names
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_atomic_writer_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "run.json"
    write_text_atomic(target, '{"status": "completed"}\n')
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "half \udc80 written")  # cannot be encoded: fails inside the write
    assert target.read_text() == '{"status": "completed"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
