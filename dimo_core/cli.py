"""The ``dimo`` command line. Every command takes key=value overrides (plugins=NAME, out_dir=PATH, ...)."""
from __future__ import annotations

import argparse
import os
import sys

from .errors import DimoError, Interrupted

COMMANDS = {
    "plugins": "list installed plugins, their versions and what they register",
    "config": "`dimo config show key=value ...`: print the merged, validated configuration",
    "run": "distil the teacher into a one-step student (resumes from out_dir)",
    "train-teacher": "train or fine-tune an MDM teacher (eq. 3 of the paper)",
    "sample": "draw from the student, or from the teacher (sample.source=teacher sample.steps=N)",
    "eval": "write report.json/report.md and a quality-vs-steps plot for the run in out_dir",
    "export": "write the student in its teacher's own format (export.format=..., export.path=FOLDER)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dimo", description="Distil masked diffusion models into one step.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="commands:\n" + "\n".join(f"  {k:14s} {v}" for k, v in COMMANDS.items())
                                     + "\n\n`dimo COMMAND --help` lists that command's keys; all keys: docs/configuration.md")
    parser.add_argument("command", choices=list(COMMANDS), metavar="command")
    parser.add_argument("args", nargs="*", help="key=value overrides")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    argv = sys.argv[1:] if argv is None else list(argv)
    words = [a for a in argv if not a.startswith("-")]
    if words and words[0] in COMMANDS and {"-h", "--help"} & set(argv):  # `dimo COMMAND --help`
        from .help import command_help
        print(command_help(words[0], COMMANDS[words[0]]))
        return 0
    ns = parser.parse_intermixed_args(argv)  # --no-progress may come anywhere
    try:
        return _dispatch(ns.command, ns.args, not ns.no_progress)
    except Interrupted as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"dimo: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:  # Ctrl-C outside training (loading, sampling): nothing half-written to report
        print("dimo: interrupted", file=sys.stderr)
        return 130
    except DimoError as e:
        print(f"dimo: error: {e}", file=sys.stderr)
        return 2


# What each command never reads: a REQUIRED value there does not stop it (`config show` reads nothing).
UNUSED_SECTIONS = {
    "train-teacher": ("teacher.path", "distill", "sample", "eval"),  # a new teacher; its path is the output
    "run": ("train_teacher", "dataset", "sample"),                    # distillation needs no data
    "sample": ("train_teacher", "dataset", "distill", "eval"),
    "eval": ("train_teacher", "dataset", "distill", "sample"),
}


def _dispatch(command: str, args: list[str], progress: bool) -> int:
    from .registry import get_registry
    registry = get_registry()
    if command == "plugins":
        for info in registry.plugins():
            print(f"{info.name} {info.version}")
            for kind, names in info.registers.items():
                print(f"  {kind}: {', '.join(names)}")
        return 0
    if command == "config":
        if not args or args[0] != "show":
            print("usage: dimo config show [plugins=NAME] [key=value ...]", file=sys.stderr)
            return 2
        args = args[1:]
    from .config import RunConfig, load_config, to_yaml
    unused = tuple(RunConfig.model_fields) if command == "config" else UNUSED_SECTIONS.get(command, ())
    config = load_config(args, registry, unused)
    if command == "config":
        print(to_yaml(config), end="")
        return 0
    from .context import Context
    ctx = Context(config, registry)
    if command == "run":
        from .distill import distill
        student = distill(ctx, progress)
        if student and os.environ.get("RANK", "0") == "0":  # under torchrun, one rank speaks
            print(f"student written to {student}")
        if config.eval.after_run and int(os.environ.get("WORLD_SIZE", "1")) == 1:
            _evaluate(ctx, progress)
    elif command == "train-teacher":
        from .train_teacher import train_teacher
        teacher = train_teacher(ctx, progress)
        if teacher:
            print(f"teacher written to {teacher}")
    elif command == "sample":
        from .run_folder import command_line, run_folder_lock
        from .sample import sample
        with run_folder_lock(ctx.out_dir, command_line()):
            rows = sample(ctx)
        print(f"samples drawn: {', '.join(f'{k} ({tuple(v.shape)})' for k, v in rows.items())}")
        print("written:\n" + "\n".join(f"  {p}" for p in rows.paths))
    elif command == "export":
        from .export import export
        paths = export(ctx)
        print("student exported:\n" + "\n".join(f"  {p}" for p in paths))
    elif command == "eval":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise DimoError("dimo eval runs in one process; launch it without torchrun")
        _evaluate(ctx, progress)
    return 0


def _evaluate(ctx, progress: bool) -> None:
    from .evaluate import evaluate
    from .run_folder import command_line, run_folder_lock
    with run_folder_lock(ctx.out_dir, command_line()):
        evaluate(ctx, progress)
    print((ctx.out_dir / "report.md").read_text())
    print(f"report written to {ctx.out_dir / 'report.json'}")


if __name__ == "__main__":
    sys.exit(main())
