"""The `textual-inversion` command: a thin layer that maps options 1:1 onto the config dataclasses.

Every option comes from a config field (its help text included), `--config file.toml` supplies the
same options from a file, and options given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import difflib
import logging
import os
import sys
import threading
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # before transformers is first imported

from .config import (  # noqa: E402
    DemoConfig,
    EvaluateConfig,
    GenerateConfig,
    TrainConfig,
    UIConfig,
    field_choices,
    is_loopback,
)
from .errors import UserError  # noqa: E402
from .methods import METHODS, method_option_fields  # noqa: E402
from .options import coerce, default_of, field_kinds, flag, read_toml  # noqa: E402


def add_option(parser, config_class: type, field: dataclasses.Field) -> None:
    """One option for a dataclass field; its default is left out so we can tell what the user gave."""
    kind = field_kinds(config_class)[field.name]
    help_text = help_with_default(field.metadata["help"], default_of(field))
    common = {"dest": field.name, "help": help_text, "default": argparse.SUPPRESS}
    if kind is bool:
        parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, **common)
    elif kind is list:
        parser.add_argument(flag(field.name), action="append", metavar="VALUE", **common)
    else:
        choices = field_choices(config_class, field)
        parser.add_argument(flag(field.name), type=kind, choices=choices,
                            metavar=None if choices else field.name.upper(), **common)


def help_with_default(help_text: str, default) -> str:
    """The help text with its default said once: not when the text names it, nor when there is none."""
    if "default" in help_text or default in (None, "", [], ()):
        return help_text
    return f"{help_text} (default: {default})"


def add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per dataclass field; for training, each method's own options in a group of their own."""
    parser.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file (command-line options win)")
    for field in dataclasses.fields(config_class):
        if field.name == "options":  # TrainConfig's method options: by method, below
            continue
        add_option(parser, config_class, field)
    if config_class is not TrainConfig:
        return
    fields = method_option_fields()
    for name, method in METHODS.items():
        shared = sorted({fields[f.name].methods[0] for f in dataclasses.fields(method.options_class)} - {name})
        also = f"; also takes the options of {', '.join(shared)}" if shared else ""
        on_miniworld = " ".join(f"{flag(key)} {value if isinstance(value, str) else format(value, 'g')}"
                                for key, value in method.miniworld_defaults.items())
        on_miniworld = f"; on miniworld: {on_miniworld}" if on_miniworld else ""
        group = parser.add_argument_group(f"--method {name}", f"{method.summary} (default --lr {method.default_lr:g}, "
                                                              f"--steps {method.default_steps}{on_miniworld}){also}")
        for option in fields.values():
            if option.methods[0] == name:  # an option shared by several methods is listed under the first
                add_option(group, option.owner, option.field)


def config_from_args(args: argparse.Namespace, config_class: type):
    """Defaults < TOML file < command line; checked here, before anything heavy is imported (the Python API
    checks again)."""
    names = TrainConfig.option_names() if config_class is TrainConfig else \
        {f.name for f in dataclasses.fields(config_class)}
    values = read_toml(args.config, names) if args.config else {}
    values.update({name: value for name, value in vars(args).items() if name in names})
    source = f"--config {args.config}" if args.config else "options"
    config = TrainConfig.from_values(values, source) if config_class is TrainConfig else \
        coerce(config_class, values, source)
    config.validate()
    return config


class OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line ("error: ...") and exit code 2, like every other error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # else `--step 50` is quietly taken as --steps
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown option is reported by its sub-command, with the closest option named."""
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            parser = self
            argv = sys.argv[1:] if args is None else list(args)
            for action in self._actions:  # the sub-command's parser, unless the mistake came before the command
                command = getattr(namespace, action.dest, None)
                if isinstance(action, argparse._SubParsersAction) and command in argv and \
                        not set(unknown) & set(argv[:argv.index(command)]):
                    parser = action.choices[command]
            parser.error(f"unrecognized arguments: {' '.join(unknown)}{parser.suggestion(unknown)}")
        return namespace

    def suggestion(self, unknown: list[str]) -> str:
        """'; did you mean --steps?' for options close to a known one (argument groups included), else ''."""
        known = [option for action in self._actions for option in action.option_strings]
        matches = {given: difflib.get_close_matches(given.split("=")[0], known, n=1)
                   for given in unknown if given.startswith("--")}
        matches = {given: close[0] for given, close in matches.items() if close}
        if not matches:
            return ""
        if len(matches) == 1:
            return f"; did you mean {next(iter(matches.values()))}?"
        return "; did you mean " + ", ".join(f"{close} for {given}" for given, close in matches.items()) + "?"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = OneLineErrors(prog="textual-inversion",
                                     description="Teach a text-to-image model your subject from 3-5 pictures.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show library log messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrors)

    train = commands.add_parser("train", help="learn a new token from a folder of images",
                                description="Learn a new token (e.g. <my-cat>) from 3-5 pictures.")
    add_config_options(train, TrainConfig)

    generate = commands.add_parser("generate", help="generate images with learned concepts",
                                   description="Generate images; --concept loads learned tokens.")
    add_config_options(generate, GenerateConfig)

    convert = commands.add_parser("convert", help="convert an embedding between diffusers, A1111 and kohya files",
                                  description="Convert an embedding file; the output suffix picks .safetensors, .pt or .bin.")
    convert.add_argument("input", help="embedding file to read (.safetensors, .pt, .bin, .png)")
    convert.add_argument("output", help="file to write; e.g. name.pt for AUTOMATIC1111, name.safetensors")
    convert.add_argument("--format", default="diffusers", choices=("diffusers", "a1111", "kohya", "a1111-png", "comfyui"),
                         help="layout to write (default: diffusers; a1111-png: AUTOMATIC1111's picture, name.png; "
                              "comfyui: a Flux or SD3 file with T5's vectors as t5xxl)")
    convert.add_argument("--preview", help="with --format a1111-png: the picture it shows (default: a card with the token)")
    convert.add_argument("--token", help="rename the token (default: keep it)")
    convert.add_argument("--overwrite", action="store_true",
                         help="allow the output to be the input file itself, rewriting it in place")

    demo = commands.add_parser("demo", help="the offline demo: teach miniworld a concept and measure it",
                               description="Teach miniworld a colour it draws but has no word for (Textual "
                                           "Inversion, a few minutes on a CPU), then generate and score it.")
    add_config_options(demo, DemoConfig)

    evaluate = commands.add_parser("evaluate", help="measure a learned concept's fidelity and editability",
                                   description="Generate over a fixed prompt set and score the images against the "
                                               "concept's ground truth (miniworld), with two baselines.")
    add_config_options(evaluate, EvaluateConfig)

    inspect = commands.add_parser("inspect", help="show what an embedding file holds",
                                  description="Print token, vectors, width, fitting model family and training metadata.")
    inspect.add_argument("file", help="embedding file (.safetensors, .pt, .bin) or a run folder")
    inspect.add_argument("--model", help="also list each vector's nearest vocabulary words in this model "
                                         "(hub id, diffusers folder, single file, or 'miniworld')")
    inspect.add_argument("--model-config", help="diffusers folder or hub id giving the configs for a single-file --model")
    inspect.add_argument("--top", type=int, default=5, help="with --model: words listed per vector (default: 5)")

    merge = commands.add_parser("merge", help="combine or edit embeddings: weighted sum, concatenation, trim, rescale",
                                description="Combine embeddings (a weighted sum, or --concat), then keep some vectors "
                                            "(--keep/--first), then set their lengths (--norm/--scale), in that order.")
    merge.add_argument("inputs", nargs="+", metavar="FILE[:WEIGHT]",
                       help="embedding files; a trailing :<number> is the file's weight (a.pt:0.7 b.pt:0.3). Summing, "
                            "give every file a weight or none (an average); with --concat a weight scales that file")
    merge.add_argument("-o", "--output", required=True, help="file to write (.safetensors, .pt, .bin)")
    merge.add_argument("--token", help="the merged token's name (default: the first file's token)")
    merge.add_argument("--concat", action="store_true", help="put the files' vectors one after another instead of "
                                                             "summing them (a multi-vector token)")
    merge.add_argument("--keep", metavar="I,J", help="keep only these vectors, numbered from 0, e.g. 0,2")
    merge.add_argument("--first", type=int, metavar="N", help="keep only the first N vectors")
    merge.add_argument("--norm", type=float, help="set every vector's length to this value")
    merge.add_argument("--scale", type=float, help="multiply every vector by this factor")
    merge.add_argument("--format", default="diffusers", choices=("diffusers", "a1111", "kohya", "comfyui"),
                       help="layout to write (default: diffusers; comfyui: a Flux or SD3 file with T5's as t5xxl)")
    merge.add_argument("--overwrite", action="store_true", help="allow the output to be one of the input files")

    export = commands.add_parser("export", help="write a run as a shareable concept folder (and push it to the hub)",
                                 description="Write a run's learned word as a Hugging Face concept-library folder: "
                                             "embedding files for diffusers, AUTOMATIC1111 and ComfyUI, sample "
                                             "pictures and a README model card.")
    export.add_argument("run_dir", metavar="RUN", help="run folder that `train` wrote; it must hold a learned embedding")
    export.add_argument("output_dir", metavar="DIR", help="folder to write (written whole; must be new or empty)")
    export.add_argument("--overwrite", action="store_true", help="replace DIR if it holds files")
    export.add_argument("--license", help="license in the model card (default: the base model's, else 'other')")
    export.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload DIR to this model repo (created if missing)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")

    pick = commands.add_parser("pick", help="rank runs of one concept by how like their training pictures they draw",
                               description="Draw each run's training captions and compare the pictures with the "
                                           "training pictures (Gram matrices of the model's VAE features: colour "
                                           "and texture); the nearest run first. No judge or download needed. "
                                           "Each run's pictures are left in RUN/pick.png, a row per training "
                                           "picture.")
    pick.add_argument("runs", nargs="+", metavar="RUN", help="finished run folders of `train`, same pictures")
    pick.add_argument("--num-images", type=int, default=4, help="pictures per training caption (default: 4)")
    pick.add_argument("--seed", type=int, help="the first picture's seed (default: one that evaluate never draws)")
    pick.add_argument("--steps", type=int, default=25, help="sampling steps (default: 25, as evaluate)")
    pick.add_argument("--guidance", type=float, default=4.0, help="guidance scale (default: 4, as evaluate)")
    pick.add_argument("--device", default="auto", help="device: auto, cpu, cuda, mps")

    ui = commands.add_parser("ui", help="a local web page to teach concepts and generate with them",
                             description="Serve a web page (Gradio) with Teach, Generate and Concepts tabs; "
                                         "training runs in the server and survives closing the page.")
    add_config_options(ui, UIConfig)
    return parser


# The commands whose options form a config: it is read and checked before torch and diffusers are imported, so
# that a mistake in it is reported at once.
COMMAND_CONFIGS = {"train": TrainConfig, "generate": GenerateConfig, "demo": DemoConfig, "evaluate": EvaluateConfig,
                   "ui": UIConfig}


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args, COMMAND_CONFIGS[args.command]) if args.command in COMMAND_CONFIGS else None
    configure_logging(args.verbose)
    if args.command == "train":
        from .training import train

        result = train(config)
        if result.outputs:  # under accelerate launch only the main process writes, and reports
            print(f"learned {', '.join(map(str, result.outputs.values()))} in {result.seconds:.0f} s ({result.steps} steps, "
                  f"final loss {result.final_loss:.4f}; {seconds_since_launch():.0f} s since launch); loss plot "
                  f"{result.output_dir / 'loss.png'}")
            advice = METHODS[config.method].advice
            if advice:
                print(f"if it falls short: {advice} (README: Methods: which one to use)")
    elif args.command == "generate":
        from .generation import generate

        paths = generate(config)
        print(f"wrote {len(paths)} image(s) and grid.png to {paths[0].parent}")
    elif args.command == "demo":
        from .demo import run_demo
        from .evaluate import format_table

        result = run_demo(config)
        print(format_table(result.evaluation))
        print(f"trained in {result.train_seconds:.0f} s ({result.train_steps} steps), evaluated in "
              f"{result.evaluation_seconds:.0f} s; {seconds_since_launch():.0f} s since launch: {result.embedding_path}")
        print(f"previews: {result.output_dir / 'run' / 'previews'}  loss: {result.output_dir / 'run' / 'loss.png'}")
        print(f"evaluation: {result.output_dir / 'evaluation' / 'evaluation.json'} and grids in "
              f"{result.output_dir / 'evaluation' / 'grids'}")
    elif args.command == "evaluate":
        from .evaluate import evaluate_from_config, format_rows

        report = evaluate_from_config(config)
        rows = list(report["rows"])
        if "baselines" in report:
            rows += [{"name": f"baseline: {k.replace('_', ' ')}", **v} for k, v in report["baselines"].items()]
        print(format_rows(rows))
        print(f"wrote {config.output_dir}/evaluation.json, {report['report_html']} and the image grids")
    elif args.command == "convert":
        from .formats import read_embedding, write_embedding

        embedding = read_embedding(args.input, token=args.token)
        # The same file under another spelling (./x, a symlink, a hard link) is the same file too.
        same = os.path.realpath(args.input) == os.path.realpath(args.output) or (
            os.path.exists(args.output) and os.path.samefile(args.input, args.output))
        if same and not args.overwrite:
            raise UserError(f"{args.output}: is the input file itself; choose another output name, "
                            "or pass --overwrite to rewrite the input in place")
        if args.preview and args.format != "a1111-png":
            raise UserError(f"--preview {args.preview}: only --format a1111-png shows a picture")
        write_embedding(embedding, args.output, args.format, preview=args.preview)
        print(f"wrote {args.output} ({args.format}, token {embedding.token}, {embedding.num_vectors} vector(s))")
    elif args.command == "inspect":
        from .concepts import resolve_concept
        from .formats import describe

        embedding = resolve_concept(args.file)
        print(describe(embedding))
        if args.model:
            from .inspection import format_nearest, nearest_words
            from .models import check_fits, load_pipeline

            if args.top < 1:
                raise UserError(f"--top {args.top}: must be at least 1")
            pipe = load_pipeline(args.model, args.model_config)
            check_fits(embedding, pipe, args.file)
            print(format_nearest(nearest_words(embedding, pipe, args.top)))
    elif args.command == "merge":
        from .formats import write_embedding
        from .merging import merge, parse_indices, read_parts

        parts = read_parts(args.inputs, args.concat)
        for part in parts:  # as for convert: the same file under another spelling is the same file
            if os.path.exists(args.output) and os.path.samefile(part.source, args.output) and not args.overwrite:
                raise UserError(f"{args.output}: is the input file {part.source}; choose another output name, "
                                "or pass --overwrite to replace it")
        keep = parse_indices(args.keep) if args.keep is not None else None
        merged = merge(parts, args.token, args.concat, keep, args.first, args.norm, args.scale)
        write_embedding(merged, args.output, args.format)
        print(f"wrote {args.output} ({args.format}, token {merged.token}, {merged.num_vectors} vector(s) from "
              f"{len(parts)} file(s))")
    elif args.command == "export":
        from .export import export_concept

        result = export_concept(args.run_dir, args.output_dir, args.overwrite, args.license, args.push_to_hub, args.private)
        print(f"wrote {result.folder}: {', '.join(result.files)}")
        if result.url:
            print(f"pushed to {result.url}")
    elif args.command == "pick":
        from .likeness import GRID_FILE, close_call, rank_runs

        seed = {} if args.seed is None else {"seed": args.seed}
        ranked = rank_runs(args.runs, args.num_images, steps=args.steps, guidance=args.guidance, device=args.device,
                           **seed)
        for likeness in ranked:
            grid = likeness.grid or f"{GRID_FILE} not written"
            print(f"{likeness.distance:.4f}  {likeness.run}  ({likeness.pictures} pictures: {grid})")
        print(f"nearest to its training pictures: {ranked[0].run}")
        margin = close_call([likeness.distance for likeness in ranked])
        if margin is not None:
            print(f"close: {ranked[1].run} is only {margin:.0%} farther; on miniworld picks this close were wrong 3 "
                  f"times in 42 (wider ones 0 in 78), so look at both pick.png grids before keeping one")
    elif args.command == "ui":
        from .ui import start

        page = start(config)
        if not is_loopback(config.host):
            print(f"warning: {page.url} is open to other machines and has no password: anyone who reaches it "
                  "can train, generate and delete concepts", file=sys.stderr)
        print(f"serving {page.url} (model {config.model}); Ctrl-C stops (a running training saves a checkpoint)")
        try:
            page.wait()
        finally:
            page.close()
    return 0


def seconds_since_launch() -> float:
    """Wall seconds since this process started, its imports included."""
    import psutil

    return time.time() - psutil.Process().create_time()


def configure_logging(verbose: bool) -> None:
    """Our own messages at INFO; the libraries' chatter (warnings, load bars) only with --verbose."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not verbose:
        import diffusers
        import transformers

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        for name in ("matplotlib", "PIL", "accelerate", "huggingface_hub", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2."""
    try:
        sys.exit(run(argv))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def console() -> None:
    """The `textual-inversion` command: `main`, the exit handlers, then the process ends without the interpreter's
    teardown. Every file is written and closed by then; the teardown would only free torch's, diffusers' and
    transformers' objects one by one, about a second at the end of every launch that loaded a model
    (benchmarks/results/launch_exit.md). The exit handlers still run (logging's flush, multiprocessing's and
    tempfile's clean-up). A run under `accelerate launch`, or one that leaves threads running, ends the usual way;
    so does one that fails with a traceback."""
    try:
        main()
        code = 0
    except SystemExit as exit:
        code = exit.code
    distributed = sys.modules.get("torch.distributed")
    if (not isinstance(code, int | None) or not hasattr(atexit, "_run_exitfuncs")
            or any(thread.is_alive() and not thread.daemon for thread in threading.enumerate()
                   if thread is not threading.main_thread())
            or (distributed is not None and distributed.is_available() and distributed.is_initialized())):
        sys.exit(code)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    console()
