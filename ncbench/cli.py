"""Command line: ``ncbench evaluate`` and ``ncbench train``. Parses, wires stages, prints; holds no logic."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._errors import NcbenchError


def _eps_list(text: str) -> tuple[str, ...]:
    """Comma-separated budgets, numbers or fractions (0,1/255,8/255); validated by AttackConfig."""
    items = tuple(v.strip() for v in text.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"eps must be comma-separated numbers, e.g. 0,0.01,8/255; got {text!r}")
    return items


def _val_size(text: str):
    """A count (``500``), a fraction (``0.1``), or ``0`` for no validation split (None)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"--val-size must be a count >= 1, a fraction in (0, 1), or 0 for none; "
                                         f"got {text!r}")
    return int(value) if value >= 1 and value.is_integer() else value


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (like every other ncbench error) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"ncbench: error: {self.prog.removeprefix('ncbench ')}: {message} (see --help)\n")


def _choices(names) -> str:
    return ", ".join(names)


def _common(p: argparse.ArgumentParser) -> None:
    from .config import DEVICES
    from .data import list_datasets
    from .train import PRECISIONS

    p.add_argument("--dataset", help=f"dataset name (default mnist1d): {_choices(list_datasets())}")
    p.add_argument("--model", help="architecture name (default: the dataset's, cnn1d for mnist1d; see --list)")
    p.add_argument("--epochs", type=int, help="training epochs")
    p.add_argument("--seed", type=int, help="seed of initialisation, batch order and attack (default 0)")
    p.add_argument("--device", choices=DEVICES, help="auto (default: cuda when there is one), cpu or cuda")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's; recorded, not part of "
                                               "the job's identity)")
    p.add_argument("--train-precision", dest="train_precision", choices=PRECISIONS,
                   help="fp32 (default) or bf16 autocast for training (opt-in; part of the job's identity)")
    p.add_argument("--val-size", dest="val_size", type=_val_size, metavar="N|FRACTION",
                   help="hold out a validation split of the training data: a count (500) or a fraction (0.1); 0 for "
                        "none (default: mnist1d 500, other datasets none)")
    p.add_argument("--config", metavar="FILE.yaml", help="a YAML config; command-line options override it")
    p.add_argument("--data-dir", dest="data_dir", metavar="DIR", help="where torchvision datasets live "
                   "(default $NCBENCH_DATA or ~/.cache/ncbench/data)")
    p.add_argument("--download", action="store_true", default=None,
                   help="let torchvision download the dataset (mnist1d, digits and gaussian need no download)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _extensions() -> list:
    """``register(subparsers)`` functions of the commands that live beside their package (sweep, results,
    regress, leaderboard, submit): each adds its subparser and sets ``func``."""
    from ._cli_sweep import register_results, register_sweep
    from .analysis._cli import register as regress
    from .leaderboard._cli import register as leaderboard
    from .leaderboard._cli import register_submit

    return [register_sweep, register_results, regress, leaderboard, register_submit]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="ncbench", description="Neural-collapse benchmark.")
    parser.add_argument("--version", action="version", version=f"ncbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="train (or load) a model, measure collapse and robustness, write a record")
    _common(ev)
    ev.add_argument("--checkpoint", metavar="PATH", help="evaluate saved weights (.safetensors, weights_only .pt, "
                                                         "or a torch.export .pt2 with --trust-checkpoint) instead "
                                                         "of training")
    ev.add_argument("--trust-checkpoint", action="store_true", help="allow a .pt2 archive, which unpickles: only "
                                                                    "for files you made yourself")
    from .attacks import MARGINS, NORMS, PRECISIONS, list_attacks

    ev.add_argument("--attack", choices=list_attacks(), help="attack (default pgd)")
    ev.add_argument("--norm", choices=NORMS, help="threat model (default Linf)")
    ev.add_argument("--eps", type=_eps_list, help="comma-separated budgets in the [0,1] input scale, numbers or "
                                                  "fractions such as 8/255 (default: the dataset's grid for the norm)")
    ev.add_argument("--steps", type=int, help="attack iterations (PGD; default 20)")
    ev.add_argument("--restarts", type=int, help="PGD random restarts (default 1)")
    ev.add_argument("--n-points", type=int, dest="n_points", help="attack only the first N test points")
    ev.add_argument("--margin", choices=MARGINS, help="fab: also the mean minimal perturbation norm found by FAB "
                                                      "(default none)")
    ev.add_argument("--precision", choices=PRECISIONS, help="fp32 (default) or bf16 forwards during the attack")
    ev.add_argument("--rerun", action="store_true", help="compute the job again, training its model again, even if "
                                                         "its record and model are in --output (the record is not "
                                                         "written twice)")
    ev.add_argument("--output", metavar="DIR", help="folder for result records (default ./ncbench-results)")
    ev.add_argument("--list", action="store_true", help="list datasets, models and attacks, then exit")
    tr = sub.add_parser("train", help="train a model and save it as safetensors")
    _common(tr)
    tr.add_argument("--out", metavar="PATH.safetensors", help="where to save (default "
                    "ncbench-results/checkpoints/<dataset>-<model>-s<seed>.safetensors)")
    tr.add_argument("--force", action="store_true", help="overwrite an existing checkpoint file")
    pl = sub.add_parser("plot", help="draw collapse over training and the robustness curve of a record (PNG, PDF): "
                                     "a record file, or a job in the results store")
    pl.add_argument("record", nargs="?", help="a JSON record written by ncbench evaluate")
    pl.add_argument("--job", metavar="JOB_ID_PREFIX", help="plot this job of the results store instead (the first "
                    "characters of its id, as `ncbench results list --sweep NAME` shows them)")
    pl.add_argument("--store", metavar="PATH", help="the results store of --job (default "
                    "ncbench-results/results.sqlite)")
    pl.add_argument("--out", metavar="STEM", help="output path without extension (default: beside the record; for "
                    "--job, <store folder>/plots/<record name>)")
    ev.set_defaults(func=cmd_evaluate)
    tr.set_defaults(func=cmd_train)
    pl.set_defaults(func=cmd_plot)
    for register in _extensions():
        register(sub)
    return parser


def cmd_plot(args) -> int:
    from ._errors import InputError
    from .plot import plot_robustness, plot_training, read_record, record_from_store

    if (args.record is None) == (args.job is None):
        raise InputError("ncbench plot takes a record file or --job JOB_ID_PREFIX (with --store PATH), one of them")
    if args.store is not None and args.job is None:
        raise InputError("--store names where --job is; give --job JOB_ID_PREFIX, or a record file without --store")
    if args.job is not None:
        from .evaluate import record_stem
        from .store import DEFAULT_STORE

        store = Path(args.store or DEFAULT_STORE)
        rec = record_from_store(store, args.job)
        stem = Path(args.out) if args.out else store.parent / "plots" / record_stem(rec)
    else:
        rec = read_record(args.record)
        stem = Path(args.out) if args.out else Path(args.record).with_suffix("")
    drawn = []
    for suffix, draw in (("-training", plot_training), ("-robustness", plot_robustness)):
        try:
            drawn += draw(rec, stem.with_name(stem.name + suffix))
        except InputError as err:
            print(f"ncbench: skipped {suffix[1:]} figure: {err}", file=sys.stderr)
    if not drawn:
        raise NcbenchError("nothing to draw: the record has neither a collapse history nor a robustness curve")
    for path in drawn:
        print(f"wrote {path}")
    return 0


def _recorded_dataset(args) -> dict | None:
    """The dataset an ncbench checkpoint records (``{"name", "args"}``), or None (no checkpoint, or a foreign one)."""
    if getattr(args, "checkpoint", None) is None:
        return None
    from .models import load_checkpoint

    model = load_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    recorded = (getattr(model, "trained_by", None) or {}).get("dataset")
    return recorded if isinstance(recorded, dict) and recorded.get("name") else None


def _names_dataset(args) -> bool:
    from .config import load_yaml

    return args.dataset is not None or bool(args.config and "dataset" in load_yaml(args.config))


def _asks_val_split(args) -> bool:
    from .config import load_yaml

    if getattr(args, "val_size", None) is not None:
        return True
    raw = load_yaml(args.config) if args.config else {}
    return "val_size" in (raw.get("dataset_args") or {})


def _checkpoint_split(args, cfg, recorded: dict | None):
    """A checkpoint's validation split is the one it was trained with: the split its metadata records (none when
    it records none), a foreign checkpoint none unless asked for (ncbench cannot know which points it trained
    on). A split asked for that differs from the recorded one is refused: it would hold out training points."""
    from dataclasses import replace

    from ._errors import InputError

    same = recorded is not None and recorded["name"] == cfg.dataset
    rec_args = (recorded or {}).get("args") or {}
    want = {"val_size": rec_args.get("val_size"), "split_seed": rec_args.get("split_seed", 0)} if same else \
        {"val_size": None, "split_seed": 0}
    if _asks_val_split(args):
        asked = {"val_size": cfg.dataset_args.get("val_size"), "split_seed": cfg.dataset_args.get("split_seed", 0)}
        if same and asked != want:
            raise InputError(f"{args.checkpoint}: the checkpoint was trained with validation split {want} of "
                             f"{cfg.dataset}; --val-size / dataset_args asks for {asked}, which would hold out points "
                             "it trained on")
        return cfg
    return replace(cfg, dataset_args={**cfg.dataset_args, **want})


def _warn_long(cfg) -> None:
    """Before a training that will take long on this machine: the estimate, and the faster choice."""
    from ._eta import training_estimate

    est = training_estimate(cfg)
    if est is None or est["seconds"] < 120:
        return
    print(f"ncbench: training {cfg.model} on {cfg.dataset} for {cfg.train.epochs} epochs will take about "
          f"{_minutes(est['seconds'])} here ({est['method']}). {est.get('faster', '')}".rstrip(), file=sys.stderr)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _config(args, dataset_from: dict | None = None):
    from .config import build_config, load_yaml

    raw = load_yaml(args.config) if args.config else {}
    if dataset_from is not None:
        raw = {**raw, "dataset": dataset_from["name"],
               "dataset_args": {**(dataset_from.get("args") or {}), **(raw.get("dataset_args") or {})}}
    return build_config(raw, dataset=args.dataset, model=args.model, epochs=args.epochs, seed=args.seed,
                        val_size=getattr(args, "val_size", None),
                        device=args.device, threads=args.threads, train_precision=args.train_precision,
                        data_dir=args.data_dir, download=args.download, output=getattr(args, "output", None),
                        **{k: getattr(args, k, None) for k in ("attack", "norm", "eps", "steps", "restarts",
                                                                "n_points", "margin", "precision")})


def cmd_evaluate(args) -> int:
    from ._report import format_record
    from .evaluate import run_evaluate, write_record

    if args.list:
        from .attacks import list_attacks
        from .data import list_datasets
        from .models import list_models

        print("datasets:", ", ".join(list_datasets()))
        print("models:  ", ", ".join(list_models()))
        print("attacks: ", ", ".join(list_attacks()))
        return 0
    import json

    from .evaluate import find_record
    from .identity import compute_job_id

    from .evaluate import MODELS_DIR, model_file

    recorded = _recorded_dataset(args)
    use_recorded = recorded if recorded is not None and not _names_dataset(args) else None
    cfg = _config(args, dataset_from=use_recorded)
    if args.checkpoint is not None:
        cfg = _checkpoint_split(args, cfg, recorded)
    if use_recorded is not None:
        print(f"using the checkpoint's dataset: {recorded['name']} {recorded.get('args') or {}} (from its metadata; "
              "--dataset chooses another)", file=sys.stderr)
    job_id = compute_job_id(cfg, checkpoint=args.checkpoint, trust=args.trust_checkpoint)
    done = find_record(cfg.output, job_id)
    if done is not None and not args.rerun:
        print(format_record(json.loads(done.read_text()), done))
        print(f"(job {job_id[:16]} was already recorded: shown from {done}; --rerun computes it again)")
        return 0
    model_dir = Path(cfg.output) / MODELS_DIR
    if args.checkpoint is None and cfg.checkpoint is None:
        kept = model_file(model_dir, cfg)
        if kept.is_file() and not args.rerun:
            print(f"reusing the model this training gave before: {kept} (--rerun trains it again)", file=sys.stderr)
        else:
            _warn_long(cfg)
    record = run_evaluate(cfg, checkpoint=args.checkpoint, progress=not args.quiet, trust=args.trust_checkpoint,
                          model_dir=model_dir, rerun=args.rerun)
    if done is not None:  # --rerun: the record follows the model it now describes (a retrained one may differ)
        from ._io import dumps, write_replace

        path = write_replace(done, dumps(record))
    else:
        path = write_record(record, cfg.output)
    print(format_record(record, path))
    if done is not None:
        print(f"(recomputed: the record of job {job_id[:16]} at {done} was replaced, not written twice)")
    return 0


def cmd_train(args) -> int:
    from .evaluate import prepare
    from .models import save_checkpoint

    from .evaluate import training_metadata
    from .identity import compute_job_id

    cfg = _config(args)
    out = Path(args.out or Path(cfg.output) / "checkpoints" / f"{cfg.dataset}-{cfg.model}-s{cfg.seed}.safetensors")
    if out.exists() and not args.force:
        raise NcbenchError(f"{out} exists; choose another --out or pass --force to overwrite it")
    from .features import model_device, predict

    ds, model, trained, _device, _ = prepare(cfg, progress=not args.quiet)
    path = save_checkpoint(model, out, training=training_metadata(cfg, compute_job_id(cfg), trained,
                                                                  getattr(model, "init_checksum", None)))
    acc = trained.history[-1]["train_accuracy"]
    test_acc = float((predict(model.eval(), ds.x_test) == ds.y_test.to(model_device(model))).double().mean())
    tpt = trained.terminal_phase_epoch
    if trained.adv_train_accuracy is not None:  # adversarial training: no terminal phase to expect
        from ._budget import eps_label
        from .train import ADV_EVAL_STEPS

        phase = (f"robust training accuracy {trained.adv_train_accuracy:.4f} under PGD-{ADV_EVAL_STEPS} at "
                 f"{cfg.train.adv_norm} eps {eps_label(cfg.train.adv_eps)} on {trained.adv_train_points} training "
                 "points; adversarially trained models rarely reach zero training error"
                 + (f"; clean train error 0 from epoch {tpt}" if tpt is not None else ""))
    else:
        phase = (f"train error 0 from epoch {tpt}" if tpt is not None else
                 "train error never reached 0: not in the terminal phase; train longer (--epochs)")
    print(f"saved {path} ({cfg.model} on {cfg.dataset}; {cfg.train.describe()}): train accuracy {acc:.4f}, "
          f"test accuracy {100 * test_acc:.2f}%, {phase}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NcbenchError as err:
        print(f"ncbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ncbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
