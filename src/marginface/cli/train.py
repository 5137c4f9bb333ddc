"""`marginface train`: a run from a YAML config, with a progress bar over the trainer's events."""

from __future__ import annotations

import argparse
import logging
import sys

from tqdm import tqdm


def register(commands: argparse._SubParsersAction) -> None:
    tr = commands.add_parser("train", help="train a recognizer (single process or under torchrun)",
                             description="Train from a YAML config (default: the embedded synthetic demo). "
                                         "Under torchrun every process runs this same command.")
    tr.add_argument("config", nargs="?", help="YAML config (see configs/); omitted: the embedded synthetic demo")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set optim.lr=0.05 (repeatable)")
    tr.add_argument("--resume", help="'auto' (newest usable checkpoint of the run directory; refuses when all are "
                                     "unusable), 'none' (start over) or a checkpoint path")
    tr.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from marginface.train.checkpoint import refuse_mixing_runs
    from marginface.train.config import DEMO_CONFIG, load_config
    from marginface.train.distributed import init_distributed
    from marginface.train.events import CheckpointEvent, EvalEvent, StartEvent, StepEvent, TrainEvent
    from marginface.train.trainer import Trainer

    if args.config is None:
        logging.getLogger("marginface.cli").info("no config given: training the embedded synthetic demo (%s)",
                                                 DEMO_CONFIG)
    config = load_config(args.config or DEMO_CONFIG, args.set)
    refuse_mixing_runs(config.output_dir, args.resume)  # before the data and model are loaded; Trainer checks too
    ctx = init_distributed(config.device)
    bar = None

    def on_event(event: TrainEvent) -> None:
        nonlocal bar
        if not ctx.is_main:
            return
        # the bar starts before the first step, so its rate is not measured from step 5
        if isinstance(event, StartEvent):
            bar = tqdm(total=event.total, initial=event.step, desc="train", unit="step", file=sys.stderr)
        elif isinstance(event, StepEvent):
            bar.update(event.step - bar.n)
            bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", lr=f"{event.lr:.4g}",
                            img_s=f"{event.images_per_s:.0f}")
        elif isinstance(event, EvalEvent):
            message = f"step {event.step}: {event.set_name} accuracy {100 * event.accuracy:.2f} %"
            (bar.write(message) if bar is not None else print(message))
        elif isinstance(event, CheckpointEvent) and bar is not None:
            bar.set_description(f"train (saved step {event.step})")

    trainer = Trainer(config, ctx, on_event)
    if args.resume:
        trainer.resume(args.resume)
    result = trainer.train()
    if bar is not None:
        bar.close()
    if ctx.is_main:
        accuracy = ", ".join(f"{k} {100 * v:.2f} %" for k, v in result.verification.items())
        print(f"done: {result.steps} steps in {result.seconds / 60:.1f} min, final loss {result.final_loss:.3f}; "
              f"held-out verification: {accuracy or 'none configured'}")
        print(f"run directory: {result.run_dir} (model in {result.run_dir / 'model'})")
    return 0
