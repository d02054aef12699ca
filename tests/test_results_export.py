"""Results you can take elsewhere: == without wall time, CSV, pandas, the show command, and plots that leave matplotlib alone."""

import csv
import math
import subprocess
import sys

import numpy as np
import pytest

from mms_manifolds import GaussNewton
from mms_manifolds.cli import main
from mms_manifolds.results import COLUMNS, MMSResult

from problems import regression_flow


@pytest.fixture(scope="module")
def result():
    flow = regression_flow(count=32)
    return flow.run(flow.parametrization.initial_point(), 3, GaussNewton(max_iterations=2))


def test_equality_leaves_out_wall_time_and_same_timing_compares_it(result, tmp_path):
    path = result.save(tmp_path / "r.npz")
    copy = MMSResult.load(path)
    copy.columns["wall_time"] = [t + 1.0 for t in copy.columns["wall_time"]]
    assert copy == result and not copy.same_timing(result)
    assert MMSResult.load(path).same_timing(result)
    copy.columns["energy"][2] = np.nextafter(copy.columns["energy"][2], 1.0)  # one ulp in a computed number
    assert copy != result
    with pytest.raises(TypeError, match="two MMSResults"):
        result.same_timing("r.npz")


def test_to_csv_writes_every_column_bit_for_bit(result, tmp_path):
    path = result.to_csv(tmp_path / "out" / "r.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", *COLUMNS, "stop_reason"] and len(rows) == 4
    for step, row in enumerate(rows):
        assert int(row["step"]) == step and row["stop_reason"] == result.stop_reasons[step]
        for name in COLUMNS:
            stored, value = float(row[name]), result.columns[name][step]
            assert stored == value or (math.isnan(stored) and math.isnan(value))


def test_to_dataframe(result):
    pandas = pytest.importorskip("pandas")
    frame = result.to_dataframe()
    assert isinstance(frame, pandas.DataFrame) and frame.index.name == "step"
    assert np.array_equal(frame["tracking_bound"].to_numpy(), result.tracking_bound)
    assert list(frame["stop_reason"]) == result.stop_reasons


def test_to_dataframe_without_pandas_names_the_fix(result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match=r"needs pandas.*pip install pandas.*to_csv"):
        result.to_dataframe()


def test_show_prints_the_table_and_exports(result, tmp_path, capsys):
    path = result.save(tmp_path / "r.npz")
    assert main(["show", str(path), "--plot", str(tmp_path / "r.png"), "--csv", str(tmp_path / "r.csv")]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: 3 steps, tau = 0.2" in printed and result.table() in printed
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "r.csv").read_text().startswith("step,energy,")


def test_show_refuses_a_bad_file(tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"not a result")
    assert main(["show", str(tmp_path / "bad.npz")]) == 2
    assert "is not a valid MMS result" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing.npz")]) == 2


def test_plot_leaves_the_users_backend_and_pyplot_alone(result, tmp_path):
    path = result.save(tmp_path / "r.npz")
    script = (
        "import matplotlib, sys\n"
        "matplotlib.use('svg')\n"
        "from mms_manifolds import MMSResult\n"
        f"MMSResult.load({str(path)!r}).plot({str(tmp_path / 'p.png')!r})\n"
        "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["svg", "False"]
    assert (tmp_path / "p.png").stat().st_size > 0
