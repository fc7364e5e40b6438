"""experiments/gpu_check.py on a CPU with --quick: every row reaches both report files as it is measured."""

import json

import pytest

from jaxlab import cli
from jaxlab.train import import_experiment_file

gpu_check = import_experiment_file(cli.experiments_dir() / "gpu_check.py")


def test_quick_check_reports_devices_msign_and_a_bitwise_resume(tmp_path):
    gpu_check.main(["--quick", "--out", str(tmp_path), "--only", "devices,msign,resume"])
    rows = json.loads((tmp_path / "gpu_report.json").read_text())
    by_name = {row["name"]: row for row in rows}
    assert by_name["devices"]["platform"] == "cpu" and by_name["devices"]["count"] == 8
    for dtype in ("float32", "bfloat16"):
        row = by_name[f"2×64×128 {dtype}"]
        assert "error" not in row and 0 < row["max_abs_sigma_minus_1"] < 0.5, row
    assert by_name["20+20 vs 40 steps"]["bitwise_equal"] is True
    assert len((tmp_path / "gpu_report.md").read_text().splitlines()) == 2 + len(rows)  # header + one line per row


def test_the_deadline_skips_what_it_cuts(tmp_path):
    gpu_check.main(["--quick", "--out", str(tmp_path), "--only", "msign,benchmarks", "--budget", "1e-9"])
    rows = json.loads((tmp_path / "gpu_report.json").read_text())
    assert rows and all(row.get("skipped") == "deadline" for row in rows)
    assert {row["section"] for row in rows} == {"msign", "benchmarks"}


@pytest.mark.parametrize("argv", [["--only", "gpu"], ["--only", ""], ["--budget", "0"]])
def test_bad_arguments_exit_2(tmp_path, argv):
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--out", str(tmp_path), *argv])
    assert stop.value.code == 2
