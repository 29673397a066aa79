"""``bmfl blob put|get|cid`` on the local store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from launcher.cli import app

HELLO_V1 = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_cid_put_get_round_trip(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello world")
    assert runner.invoke(app, ["blob", "cid", str(src)]).output.strip() == HELLO_V1
    v0 = runner.invoke(app, ["blob", "cid", "--profile", "v0", str(src)]).output.strip()
    assert v0 == "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"
    store = tmp_path / "store"
    put = runner.invoke(app, ["blob", "put", "--pin", str(src)], env={"BMFL_BLOB_DIR": str(store)})
    assert put.exit_code == 0 and put.output.strip() == HELLO_V1
    got = runner.invoke(app, ["blob", "get", HELLO_V1, "--store", str(store)])
    assert got.exit_code == 0 and got.stdout_bytes == b"hello world"


def test_errors_exit_nonzero_with_a_reason(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["blob", "get", HELLO_V1, "--store", str(tmp_path)])
    assert missing.exit_code == 1 and "no blob" in missing.output
    bad = runner.invoke(app, ["blob", "get", "nonsense", "--store", str(tmp_path)])
    assert bad.exit_code == 1 and "not a CID" in bad.output
    src = tmp_path / "f"
    src.write_bytes(b"x")
    assert runner.invoke(app, ["blob", "cid", "--profile", "v9", str(src)]).exit_code == 1
