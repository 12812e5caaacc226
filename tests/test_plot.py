"""`ncbench plot`: a job of the results store (--store, --job), and zeros on the log axes said on the figure."""

import copy

import pytest
from sweep_helpers import cli as results_cli
from sweep_helpers import hex_id, make_record

from ncbench._errors import InputError
from ncbench.cli import main
from ncbench.store import ResultsStore


def with_history(record, *, zero_error_from=3):
    """The record with a 5-epoch collapse history whose training error is exactly 0 from an epoch on."""
    rec = copy.deepcopy(record)
    rows = []
    for epoch in (1, 2, 3, 4, 5):
        done = epoch >= zero_error_from
        metrics = {"nc1": 1.0 / epoch, "nc2_equinorm_means": 0.1 / epoch, "nc2_maxangle_means": 0.2 / epoch,
                   "nc3_duality": 0.3 / epoch,
                   "nc4_ncc_mismatch": 0.0 if done else 0.05}
        rows.append({"epoch": epoch, "train_accuracy": 1.0 if done else 0.9 + 0.01 * epoch, "test_accuracy": 0.8,
                     "first_zero_error": epoch == zero_error_from,
                     "collapse": {"train": dict(metrics), "test": {**metrics, "nc4_ncc_mismatch": 0.1 / epoch}}})
    rec["training"]["collapse_history"] = rows
    rec["training"]["terminal_phase_epoch"] = zero_error_from
    rec["provenance"]["config"]["train"] = {"loss": "ce"}
    return rec


def test_zeros_on_the_log_axes_are_drawn_and_said(tmp_path):
    """Issue 18: zeros vanished from the log axes without a note. Catches a figure that masks or clips them
    silently: each zero is a ▼ on its panel's bottom edge, and the figure's foot says what ▼ is and counts."""
    from ncbench.plot import training_figure

    fig = training_figure(with_history(make_record(hex_id(1))))
    # training error is 0 at epochs 3, 4, 5 (3 points) and so is train NC4 (3 points): 6 zeros
    assert "▼ on a panel's bottom edge: a value of exactly 0, which a log axis cannot show (6 points" in \
        fig._supxlabel.get_text()
    markers = [line for ax in fig.axes for line in ax.lines if line.get_marker() == "v"]
    assert sorted(len(line.get_xdata()) for line in markers) == [3, 3]
    assert all(list(line.get_ydata()) == [0.0, 0.0, 0.0] and not line.get_clip_on() for line in markers)
    no_zero = training_figure(with_history(make_record(hex_id(1)), zero_error_from=9))
    assert no_zero._supxlabel is None  # no zero, no note


def test_plot_a_job_of_the_store(tmp_path, capsys):
    """Issue 18: `ncbench plot` read only record files. Catches a --job that does not match by prefix, that
    picks one of several matching jobs, or that writes beside the current folder instead of the store."""
    store_path = tmp_path / "res" / "results.sqlite"
    a, b = "ab" + hex_id("a")[2:], "ab" + hex_id("b")[2:]
    with ResultsStore(store_path) as st:
        st.put_record(with_history(make_record(a)))
        st.put_record(make_record(b))
        st.put_failure(hex_id("f"), sweep=None, axes=None, dataset="digits", model="mlp", config={}, error="boom")
    assert main(["plot", "--store", str(store_path), "--job", a[:6]]) == 0
    out = capsys.readouterr().out
    written = sorted(p.name for p in (tmp_path / "res" / "plots").iterdir())
    assert len(written) == 4 and {p.rsplit("-", 1)[-1] for p in written} == {"training.png", "training.pdf",
                                                                               "robustness.png", "robustness.pdf"}
    assert out.count("wrote ") == 4
    for argv, message in (
            (["--job", "ab"], rf"--job 'ab' matches 2 jobs in .*results.sqlite \({min(a, b)[:16]}, {max(a, b)[:16]}\)"),
            (["--job", "ffff0000"], r"no job in .*results.sqlite starts with 'ffff0000'"),
            (["--job", hex_id("f")[:10]], r"job [0-9a-f]{16} in .* failed: it has no record"),
            (["--job", "XY"], r"a job id prefix is lowercase hex digits"),
    ):
        assert main(["plot", "--store", str(store_path), *argv]) == 2
        err = capsys.readouterr().err
        assert __import__("re").search(message, err), (message, err)
    assert main(["plot", "x.json", "--job", "ab"]) == 2
    assert "a record file or --job JOB_ID_PREFIX" in capsys.readouterr().err
    with pytest.raises(InputError, match="no results store"):
        from ncbench.plot import record_from_store

        record_from_store(tmp_path / "none.sqlite", "ab")
    assert results_cli("results", "list", "--store", store_path)[0] == 0
