"""The ``lnlbench`` command line. Every command has ``--help``; user errors print one line, no traceback."""
from __future__ import annotations

import argparse
import json
import sys

from .aggregate.cli import COMMANDS as AGGREGATE_COMMANDS
from .command import Command
from .errors import LnlError
from .files import writable_dir
from .runner.cli import COMMANDS as RUNNER_COMMANDS


def _kv(text: str) -> tuple[str, object]:
    key, sep, val = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    try:
        return key, json.loads(val)
    except json.JSONDecodeError:
        return key, val


# -- list ------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from .registry import REGISTRIES

    kinds = [args.kind] if args.kind else list(REGISTRIES)
    for kind in kinds:
        print(f"{kind}:")
        for name, desc in REGISTRIES[kind].describe():
            print(f"  {name:<22} {desc}")
    return 0


def _list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=["methods", "noise", "datasets", "models"],
                   help="what to list (default: everything)")



# -- trial -----------------------------------------------------------------------------------------
def cmd_trial(args: argparse.Namespace) -> int:
    from .config import TrialConfig, resolve
    from .engine import run_trial
    from .progress import TrialProgress

    cfg = TrialConfig(
        method=args.method, dataset=args.dataset, noise=args.noise, rate=args.rate, seed=args.seed,
        preset=args.preset, epochs=args.epochs, hparams=dict(args.hp), noise_options=dict(args.noise_opt),
        data_options=dict(args.data_opt),
        subset=args.subset, test_subset=args.test_subset, augment=args.augment,
        stream=args.stream, loader_workers=args.loader_workers,
        golden_per_class=args.golden_per_class, golden_add=args.golden_add,
        val_fraction=args.val_fraction, data_file=args.data_file, recipes=args.recipes,
        data_root=args.data_root, download=args.download, out_dir=args.out, device=args.device,
        amp=args.amp, channels_last=args.channels_last, compile=args.compile, resume=not args.restart,
        keep_checkpoint=args.keep_checkpoint, eval_batch_size=args.eval_batch_size)
    total = resolve(cfg).hparams.epochs  # raises a configuration error before anything runs
    out = writable_dir(args.out, "--out folder")
    progress = TrialProgress(total, f"{cfg.method} {cfg.dataset}", mode=args.progress)
    try:
        res = run_trial(cfg, on_epoch_end=progress)
    finally:
        progress.close()
    where = out / res["trial_id"] / "result.json"
    if res["status"] != "ok":
        print(f"lnlbench: trial failed: {res['error']['type']}: {res['error']['message']} ({where})",
              file=sys.stderr)
        return 1
    noise = res["noise"]
    label = res.get("noise_label") or noise["name"]
    rate = "" if noise["rate"] is None or "@" in label else f" r={noise['rate']}"
    print(f"{res['method']} on {res['dataset']} {label}{rate} seed={res['seed']}: "
          f"best {res['best_acc']:.4f} (epoch {res['best_epoch']}), last {res['last_acc']:.4f}, "
          f"realized noise {noise['realized_rate']:.4f}, {res['epochs_done']} epochs in "
          f"{res['wall_time_s']:.1f}s on {res['device']} -> {where}")
    return 0


def _trial_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="ce", help="registered method (lnlbench list methods)")
    p.add_argument("--dataset", default="digits", help="registered dataset (default: digits, offline)")
    p.add_argument("--noise", default="symmetric",
                   help="noise generator, optionally with its variant: symmetric, asymmetric:elr, "
                        "cifar10n:worst, "
                        "file:PATH (labels frozen in a file: lnlbench noise export, or a .npy/.json array)")
    p.add_argument("--rate", type=float, default=None,
                   help="noise rate in [0, 1) (synthetic noise; omit for real noise)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="auto",
                   help="paper | mini | auto (mini for digits, else paper) | tuned (the recipe `lnlbench tune` wrote)")
    p.add_argument("--recipes", default="results/recipes", metavar="DIR",
                   help="where --preset tuned reads <DIR>/<dataset>/<method>.yaml")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's number of epochs")
    p.add_argument("--hp", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="override a method hyperparameter (repeatable), e.g. --hp lr=0.01")
    p.add_argument("--noise-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="noise generator option (repeatable), e.g. --noise-opt label_file=/x/CIFAR-10_human.pt")
    p.add_argument("--data-opt", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="dataset loader option (repeatable; part of the trial id), e.g. for clothing1m "
                        "--data-opt image_size=112 --data-opt max_train=all")
    p.add_argument("--subset", type=int, default=None,
                   help="images per class to keep (CPU-scale runs; default: the recipe's protocol)")
    p.add_argument("--test-subset", type=int, default=None,
                   help="test images per class to keep (a fixed stratified subset; CPU-scale runs)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="train-time random crop and flip (default: the recipe's protocol, normally on)")
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="stream batches decoded by DataLoader workers instead of holding the set on the device "
                        "(default: the dataset's choice; Clothing1M in full and mini-WebVision stream)")
    p.add_argument("--loader-workers", type=int, default=None, metavar="N",
                   help="DataLoader workers of the streaming path (default: the trial's CPUs)")
    p.add_argument("--golden-per-class", type=int, default=None, metavar="N",
                   help="carve N clean-labelled (golden) images per class out of the training set, seeded by "
                        "the seed: a method that uses clean data gets them; others train without them "
                        "(default: the recipe's protocol, else none)")
    p.add_argument("--golden-add", action="store_true",
                   help="train a method that does not use clean data on the golden set too, with its clean "
                        "labels (the fair-comparison row; flagged as using clean data)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="hold out this fraction of the noisy train set for noise-blind model selection")
    p.add_argument("--data-file", default=None, help="an .npz array file to use for the dataset")
    p.add_argument("--data-root", default=None, help="data folder (default: $LNLBENCH_DATA or ~/.cache/lnlbench)")
    p.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    p.add_argument("--out", default="results/runs/trials", help="where the trial folder is written")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto = fp32 (off) for every preset, as the official codes train")
    p.add_argument("--channels-last", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--eval-batch-size", type=int, default=None, metavar="N",
                   help="batch of every no-grad evaluation pass (test accuracy, per-sample losses, kNN "
                        "features); default: the device's choice, 1024 on CUDA, 64 on CPU")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of this trial")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the final checkpoint")
    p.add_argument("--progress", choices=["auto", "bar", "lines", "off"], default="auto",
                   help="live progress on stderr: auto = a bar on a terminal, else one line every few epochs")



# -- noise -----------------------------------------------------------------------------------------
def cmd_noise(args: argparse.Namespace) -> int:
    if args.noise_command != "export":
        args.noise_parser.print_help()
        return 2
    from .noisefile import export_noise

    done = export_noise(args.source, args.out)
    print(f"{done['n']} noisy labels of {done['trial_id']} ({done['noise_label']}, "
          f"sha256 {done['sha256'][:12]}) "
          f"-> {done['out']}; train on them with --noise file:{done['out']}")
    return 0


def _noise_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="noise_command", metavar="ACTION")
    p.set_defaults(noise_parser=p)
    help_ = ("write a trial's noisy labels to an .npz with their hash, generator, options, rate, seed and the "
             "clean-label hash (to share them; train on them again with --noise file:FILE)")
    e = sub.add_parser("export", help=help_, description=help_)
    e.add_argument("source", metavar="RUN_DIR_OR_CELL",
                   help="a trial folder (it holds result.json), or a run folder with exactly one trial")
    e.add_argument("--out", required=True, metavar="FILE.npz", help="the noise file to write")


# -- perf ------------------------------------------------------------------------------------------
def cmd_perf(args: argparse.Namespace) -> int:
    from .perf import FULL, QUICK, run_perf  # torch is imported here, not by `lnlbench --help`
    from .perf.report import render

    executors = {None: None, "both": ["light", "train"]}.get(args.executor, [args.executor])
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.compare_official:
        from .perf.official import check_official
        from .perf.run import run_compare_official

        check_official(args.compare_official)  # a wrong folder fails now, in one line, before any data are built
        result = run_compare_official(QUICK if args.quick else FULL, args.compare_official, device=args.device,
                                      workers=args.official_workers, log=log)
    else:
        result = run_perf(QUICK if args.quick else FULL, device=args.device, skip_ray=args.skip_ray,
                          executors=executors, methods=args.method or None, log=log)
    print(render(result))
    if args.json:
        from pathlib import Path

        from .results import write_json

        write_json(Path(args.json), result)
        print(f"figures -> {args.json}")
    return 0


def _perf_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small sizes: under 3 minutes on 2 CPU cores (default: the full run, ~10 minutes)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every figure to this JSON file")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--skip-ray", action="store_true", help="skip the grid-packing measurement (needs Ray)")
    p.add_argument("--executor", choices=["light", "train", "both"], default=None,
                   help="runner executor(s) for grid packing (default: light with --quick, both otherwise)")
    p.add_argument("--method", action="append", default=[],
                   help="time only this method (repeatable; CE is always timed; default: every registered one)")
    p.add_argument("--compare-official", metavar="DIR", default=None,
                   help="instead of the six figures: our DivideMix beside the official code in DIR (a clone of "
                        "github.com/LiJunnan1992/DivideMix, patched in memory only: device calls, network, dataset "
                        "size), on identical noisy labels; 2,000 images with --quick, 10,000 otherwise")
    p.add_argument("--official-workers", type=int, default=None, metavar="K",
                   help="with --compare-official: the official loaders' worker processes (default: its 5)")




BASIC_COMMANDS = (
    Command("list", "list the registered methods, noise generators, datasets and models", _list_args, cmd_list),
    Command("trial", "run one trial locally and print a one-line summary", _trial_args, cmd_trial),
    Command("noise", "frozen noise files: `noise export` writes a trial's noisy labels to share them",
            _noise_args, cmd_noise),
    Command("perf", "measure engine overhead, augmentation, method cost, grid packing and memory "
                    "(each a side-by-side ratio)", _perf_args, cmd_perf),
)
# Every sub-command, in `lnlbench --help` order: declared in the modules above, nothing registers itself.
COMMANDS: dict[str, Command] = {c.name: c for c in (*BASIC_COMMANDS, *AGGREGATE_COMMANDS, *RUNNER_COMMANDS)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lnlbench", description="Benchmark suite for learning with noisy labels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS.values():
        c.add_arguments(sub.add_parser(c.name, help=c.help, description=c.help))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command].run(args)
    except LnlError as exc:
        print(f"lnlbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lnlbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # `python -m lnlbench.cli`
    sys.exit(main())
