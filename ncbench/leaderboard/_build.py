"""``ncbench leaderboard build GRID.yaml``: from a committed grid to its boards, in one command.

1. Run the grid's sweep (``ncbench sweep``; jobs already in the store are skipped, so a second call only
   re-renders). With ``export_every=N`` the data export (2.) is also rewritten after every N finished jobs, so
   a long build can be committed as it goes.
2. Export it under ``leaderboards/data/<sweep>/``: ``results.csv`` (the ``load_frame`` table, numbers at 15
   significant digits) and ``records.jsonl.gz`` (every record, one JSON per line, gzip without a timestamp),
   each file written atomically.
3. For every board on the grid's dataset (or the ``boards`` asked for; none with ``no_boards``), run the
   board's protocol on one model per configuration (the grid's first seed): AutoAttack at the headline budget
   and the PGD curve on the board's points, evaluating the sweep's saved checkpoint. These are ordinary jobs
   too (sweep ``<grid>@<board>`` in the store), so an interrupted build resumes; their records are exported as
   ``data/<sweep>/boards.jsonl.gz``. Each model's weights are committed once under ``weights/`` (shared by
   its boards), each entry (source ``sweep``) names them, and the board is re-rendered. Weights files no entry
   names any more are removed.
4. Regress accuracy and robustness on collapse over the whole grid (:func:`ncbench.analysis.regress`) and
   write the measures board ``leaderboards/measures/<sweep>/``.

On another machine the build resumes from the committed files without recomputing: ``ncbench results import
leaderboards/data/<sweep>/`` restores the grid's and the board jobs' records, and the committed weights stand in
for the sweep's checkpoints.
"""

from __future__ import annotations

from pathlib import Path

from .._errors import InputError, NcbenchError

MEASURES = "measures"
DATA = "data"


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def entry_naming(arch: str, axes: dict, seed_axis: str | None) -> tuple[str, str]:
    """(name, id) of a grid configuration: ``cnn1d (channels 8, weight_decay 0.0005, ...)`` and a slug."""
    from ._submit import slug

    parts = [(k, v) for k, v in axes.items() if k != seed_axis]
    name = f"{arch} (" + ", ".join(f"{_short(k)} {_value(v)}" for k, v in parts) + ")"
    seed = axes.get(seed_axis) if seed_axis else None
    ident = "-".join([arch] + [f"{_short(k)}{_value(v)}" for k, v in parts] + ([f"s{seed}"] if seed_axis else []))
    return name + (f", seed {seed}" if seed_axis else ""), slug(ident)


def summary_markdown(frame, sweep_name: str, source: str) -> str:
    """A sweep's spreads and wall time, and one row per configuration with mean ± std over its seeds."""
    import numpy as np

    axes = list(frame.attrs.get("axes") or [])
    config_axes = [a for a in axes if a != "seed"]
    robust = [c for c in frame.columns if "_accuracy@" in c]  # the main attack's and the extra attacks' budgets
    cols = ["test_accuracy", *robust, "train.nc1", "test.nc1"]
    n = len(frame)
    zero = int(frame["terminal_phase_epoch"].notna().sum())
    wall = frame["wall_time_s"].astype(float)
    link = f"[`{source}`](../../../{source})" if source and not Path(source).is_absolute() else f"`{source}`"
    lines = [f"# Sweep `{sweep_name}`: the data", "",
             f"{n} models from {link}, exported by `ncbench leaderboard build {source}`: "
             "`results.csv` (one row per model, the `ncbench.store.load_frame` table, numbers at 15 significant "
             "digits), `records.jsonl.gz` (every record, one JSON per line) and, when the build filled boards, "
             "`boards.jsonl.gz` (the records of the boards' protocol jobs, which `ncbench leaderboard check` "
             f"compares the entries with). `ncbench results import leaderboards/data/{sweep_name}/` loads them into "
             "a results store, where the build resumes without recomputing them.", "",
             f"- Zero training error reached: {zero} of {n} models.",
             f"- Test accuracy: {frame['test_accuracy'].min():.3f} to {frame['test_accuracy'].max():.3f}."]
    for c in robust:
        lines.append(f"- {c}: {frame[c].min():.3f} to {frame[c].max():.3f}.")
    lines += [f"- Compute: {wall.sum() / 60:.1f} min of job time in all (median {np.median(wall):.1f} s a job; "
              "each record says its machine and thread count).", "",
              "Per configuration, mean ± std over its seeds (std with Bessel's correction; one seed: std 0):", ""]
    head = [*config_axes, "seeds", *cols]
    lines += ["| " + " | ".join(f"`{h}`" if h in cols else h for h in head) + " |",
              "|" + "|".join("---" for _ in head) + "|"]
    groups = frame.groupby(config_axes, sort=True, dropna=False) if config_axes else [((), frame)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"{v:g}" if isinstance(v, float) else str(v) for v in key] + [str(len(g))]
        for c in cols:
            std = float(g[c].std(ddof=1)) if len(g) > 1 else 0.0
            cells.append(f"{float(g[c].mean()):.3f} ± {std:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def export_data(store, sweep_name: str, out_dir: Path, *, source: str = "", progress: tuple[int, int] | None = None,
                boards: bool = True) -> list[Path]:
    """``results.csv``, ``records.jsonl.gz``, ``boards.jsonl.gz`` (the records of the board jobs of the grid,
    sweeps ``<sweep>@<board>``, when there are any and ``boards``) and a ``README.md`` summary of a sweep;
    byte-stable for the same records, each file replaced atomically.

    ``progress``: ``(jobs done, jobs in the grid)`` for an export made while the sweep runs (said in the README).
    """
    from .._io import write_replace
    from ..store import ResultsStore, frame_csv, gzip_bytes, load_frame, records_jsonl

    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    frame = load_frame(st, sweep=sweep_name)
    records = sorted(st.records(sweep=sweep_name), key=lambda r: r["provenance"]["job_id"])
    readme = summary_markdown(frame, sweep_name, source)
    if progress is not None:
        readme = readme.replace("\n\n", f"\n\n**Partial export**: {progress[0]} of {progress[1]} jobs of the grid were "
                                        "done when it was written; the build was still running.\n\n", 1)
    written = [write_replace(out_dir / "results.csv", frame_csv(frame)),
               write_replace(out_dir / "records.jsonl.gz", gzip_bytes(records_jsonl(records)))]
    board_sweeps = [name for name in st.sweeps() if name.startswith(f"{sweep_name}@")] if boards else []
    board_records = sorted((r for name in board_sweeps for r in st.records(sweep=name)),
                           key=lambda r: (r["provenance"]["sweep"] or {}).get("name", "") + r["provenance"]["job_id"])
    if board_records:
        written.append(write_replace(out_dir / "boards.jsonl.gz", gzip_bytes(records_jsonl(board_records))))
    written.append(write_replace(out_dir / "README.md", readme.encode()))
    return written


def committed_checkpoints(leaderboards: str | Path) -> dict[str, Path]:
    """``{training job id: committed weights file}`` from every entry under ``leaderboards`` that has both."""
    from ._weights import entry_files

    out = {}
    for _, entry in entry_files(leaderboards):
        job = (entry.get("training") or {}).get("job_id")
        wf = entry.get("weights_file")
        if job and isinstance(wf, dict) and (Path(leaderboards) / str(wf.get("path"))).is_file():
            out[job] = Path(leaderboards) / wf["path"]
    return out


def board_sweep(grid, board, checkpoints: Path, statuses: dict, committed: dict | None = None):
    """The board's protocol on one model per configuration of ``grid`` (its first seed), as a Sweep.

    ``committed``: ``{training job id: weights file}`` (:func:`committed_checkpoints`), used where the sweep's
    own checkpoint is not in ``checkpoints`` (a build resumed on another machine from committed files): the
    protocol job's id depends on the weights, not on the file's path.
    """
    from ..config import build_config
    from ..data import TRAINING_SET_ARGS
    from ..evaluate import model_file
    from ..identity import compute_job_id
    from ..sweep._grid import Sweep, SweepJob
    from ._submit import board_config

    seed_axis = "seed" if "seed" in grid.axes else None
    first_seed = grid.jobs[0].axes.get(seed_axis) if seed_axis else None
    jobs = []
    for job in grid.jobs:
        if seed_axis and job.axes.get(seed_axis) != first_seed:
            continue
        job_id = compute_job_id(build_config(job.config))  # the trained model's job
        if statuses.get(job_id) != "done":
            raise InputError(f"cell {job.cell} {job.axes} of sweep {grid.name} is not done (its job "
                             f"{job_id[:16]} is {statuses.get(job_id) or 'not stored'}); run the sweep first")
        path = model_file(checkpoints, build_config(job.config))  # where the sweep kept the trained model
        if not path.is_file() and (committed or {}).get(job_id) is not None:
            path = committed[job_id]
        if not path.is_file():
            raise InputError(f"the checkpoint of cell {job.cell} ({path}) is missing; it is written by `ncbench "
                             "sweep` beside the store (or committed under leaderboards/weights/ by a build)")
        # the cell's training-set options (n_train, label noise) go along: collapse on "train" is measured on
        # the data this model trained on; they never touch the test split, so the board's points stay the same
        cell_cfg = build_config(job.config)
        cfg = board_config(board, seed=cell_cfg.seed, checkpoint=str(path), training_set=cell_cfg.dataset_args)
        split = {k: v for k, v in cell_cfg.dataset_args.items() if k not in TRAINING_SET_ARGS}
        if split != {k: v for k, v in cfg.dataset_args.items() if k not in TRAINING_SET_ARGS}:
            raise InputError(f"cell {job.cell} {job.axes} trained on {cell_cfg.dataset} {split}, not on board "
                             f"{board.id}'s split {dict(board.dataset_args)}")
        full = cfg.to_dict()
        # every key the protocol sets (board_config): without measures and adv_collapse_points the job would
        # compute what the entry never shows (collapse under AutoAttack: 200 of a board job's 266 s) under an
        # identity that `leaderboard verify` and `submit` never reproduce
        config = {k: full[k] for k in ("dataset", "dataset_args", "attack", "extra_attacks", "seed", "checkpoint",
                                       "measures", "adv_collapse_points")}
        jobs.append(SweepJob(cell=job.cell, axes=dict(job.axes), config=config))
    return Sweep(name=f"{grid.name}@{board.id}", axes=grid.axes, jobs=tuple(jobs), base={}, n_cells=len(jobs))


def build(grid_path: str, *, store: str, leaderboards: str = "leaderboards", boards: list[str] | None = None,
          executor: str = "local", workers: int | None = None, threads_per_job: int | None = None,
          progress: bool = True, log=lambda message: None, no_boards: bool = False,
          export_every: int | None = None) -> list[Path]:
    """Run a grid and write its boards, data export and measures board. Returns the files written.

    ``no_boards``: only the sweep, its data export and its measures board (no board jobs, entries or weights:
    for grids of a thousand models). ``export_every``: also rewrite the data export after every that many
    finished jobs of the sweep, so that a long build can be committed as it goes.
    """
    from ..analysis import regress, write_measures_board
    from ..store import ResultsStore, load_frame
    from ..sweep import expand_grid, run_sweep
    from ._boards import list_boards, load_board
    from ._entry import entry_from_records, write_entry
    from ._render import render_all
    from ._weights import commit_weights, stray_weights

    if export_every is not None and (isinstance(export_every, bool) or not isinstance(export_every, int)
                                     or export_every < 1):
        raise InputError(f"--export-every must be a whole number >= 1; got {export_every!r}")
    if no_boards and boards:
        raise InputError("--no-boards builds no board: leave out --boards")
    grid = expand_grid(grid_path)
    datasets = {job.config.get("dataset", "mnist1d") for job in grid.jobs}
    if len(datasets) != 1:
        raise InputError(f"a leaderboard grid must be on one dataset; {grid.name} has {sorted(datasets)}")
    (dataset,) = datasets
    board_ids = [] if no_boards else (
        boards or [b for b in list_boards(leaderboards) if load_board(b, leaderboards).dataset == dataset])
    if not board_ids and not no_boards:
        raise InputError(f"no board under {leaderboards} is on dataset {dataset!r} (pass --no-boards to build only "
                         "the data and the measures board)")
    lb = Path(leaderboards)
    out_dir, source = lb / DATA / grid.name, str(grid.source or grid_path)
    st = ResultsStore(store)
    after_job = None
    if export_every is not None:
        def after_job(n: int) -> None:
            if n % export_every:
                return
            row = next((r for r in st.summary() if r["sweep"] == grid.name), None)
            if row is None or not row["done"]:
                return
            try:
                export_data(st, grid.name, out_dir, source=source, progress=(row["done"], len(grid.jobs)))
            except (NcbenchError, OSError) as err:  # an export is a convenience: the sweep goes on
                log(f"export after {n} jobs failed: {err}")
                return
            log(f"exported {row['done']} of {len(grid.jobs)} jobs to {out_dir}")

    run = dict(store=st, executor=executor, workers=workers, threads_per_job=threads_per_job, progress=progress)
    log(f"sweep {grid.name}: {len(grid.jobs)} jobs")
    report = run_sweep(grid, **run, after_job=after_job)
    if report.exit_code:
        raise InputError(f"sweep {grid.name} did not finish ({report.exit_code}): see `ncbench results list "
                         f"--sweep {grid.name}`; rerun (with --retry-failed for failed jobs)")
    written: list[Path] = []
    seed_axis = "seed" if "seed" in grid.axes else None
    committed = committed_checkpoints(lb) if board_ids else {}
    for board_id in board_ids:
        board = load_board(board_id, leaderboards)
        bsweep = board_sweep(grid, board, st.folder / "checkpoints", st.statuses(), committed)
        log(f"board {board.id}: {len(bsweep.jobs)} models under its protocol")
        rep = run_sweep(bsweep, **run)
        if rep.exit_code:
            raise InputError(f"board jobs {bsweep.name} did not finish; rerun the build")
        axes_of = {m["job_id"]: m["axes"] for m in st.jobs(sweep=bsweep.name)}
        by_cell = {job.cell: job.config["checkpoint"] for job in bsweep.jobs}
        checkpoint_of = {c["job_id"]: by_cell[c["cell"]] for c in st.grid(bsweep.name)}  # the file it evaluated
        for record in st.records(sweep=bsweep.name):
            axes = axes_of[record["provenance"]["job_id"]]  # this board sweep's cell, whoever computed the job
            arch = record["provenance"]["model"]["arch"]
            name, entry_id = entry_naming(arch, axes, seed_axis)
            weights = commit_weights(checkpoint_of[record["provenance"]["job_id"]], lb)
            entry = entry_from_records(board, record, entry_id=entry_id, name=name, source="sweep",
                                       weights_file=weights)
            written.append(write_entry(entry, board.path, rebuild=True))  # a sweep's own entry: replaced whole
    written = export_data(st, grid.name, out_dir, source=source) + written
    if board_ids:  # the boards are finished before the measures board, which may refuse a grid too small to rank
        for path in stray_weights(lb):  # weights a rebuilt entry no longer names
            path.unlink()
            log(f"removed {path}: no entry names it any more")
        written += render_all(leaderboards, boards=board_ids)
    frame = load_frame(st, sweep=grid.name)
    try:
        table = regress(frame, axes=list(frame.attrs["axes"]))
    except InputError as err:  # e.g. fewer than 3 configurations, or seeds only: the boards stand, no measures board
        log(f"measures board of {grid.name} skipped: {err}")
        return written
    command = f"ncbench leaderboard build {source}" + (" --no-boards" if no_boards else "")
    written += write_measures_board(table, lb / MEASURES / grid.name, sweep=grid.name, command=command,
                                    n_models=len(frame),
                                    source_note=(f"{grid.note} " if grid.note else "")
                                    + f"{len(frame)} models of sweep {grid.name} ({source}); data: "
                                      f"leaderboards/data/{grid.name}/")
    return written
