"""The command line: options mirror the config 1:1, TOML files, one-line errors."""

import dataclasses
import os
import subprocess
import sys

import pytest

from textual_inversion.cli import build_parser, config_from_args, main
from textual_inversion.config import GenerateConfig, TrainConfig
from textual_inversion.methods import method_option_fields


def cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "textual_inversion.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


@pytest.mark.parametrize("command,config_class", [("train", TrainConfig), ("generate", GenerateConfig)])
def test_every_config_field_is_an_option_with_help(command, config_class):
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    by_dest = {action.dest: action for action in subparser._actions}
    fields = [f for f in dataclasses.fields(config_class) if f.name != "options"]  # TrainConfig.options: below
    if config_class is TrainConfig:
        fields += [option.field for option in method_option_fields().values()]  # every method's own options
    for field in fields:
        assert field.name in by_dest, f"--{field.name} missing"
        assert by_dest[field.name].help and field.metadata["help"] in by_dest[field.name].help
    for action in subparser._actions:
        assert action.help, f"{action.option_strings} has no help"


def test_toml_supplies_options_and_the_command_line_wins(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('images = "pics"\ntoken = "<t>"\ninit-token = "dog"\nsteps = 300\nflip = false\nlr = 0.01\n')
    args = build_parser().parse_args(["train", "--config", str(toml), "--steps", "50"])
    config = config_from_args(args, TrainConfig)
    assert (config.images, config.token, config.options.init_token, config.steps, config.flip, config.lr) == \
        ("pics", "<t>", "dog", 50, False, 0.01)


def test_bad_toml_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.toml").write_text("steps = = 3\n")
    (tmp_path / "unknown.toml").write_text("stepz = 3\n")
    (tmp_path / "type.toml").write_text('steps = "many"\n')
    for name, message in [("bad", "not valid TOML"), ("unknown", "unknown option 'stepz'"),
                          ("type", "option 'steps' has the wrong type")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--config", str(tmp_path / f"{name}.toml")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and err.startswith("error: ")


def subparsers():
    return build_parser()._subparsers._group_actions[0].choices


def test_help_says_each_default_once():
    for command, subparser in subparsers().items():
        for action in subparser._actions:
            assert action.help.lower().count("default") <= 1, f"{command} {action.option_strings}: {action.help}"
            assert "(default: )" not in action.help and "(default: None)" not in action.help, \
                f"{command} {action.option_strings}: {action.help}"
    helps = {action.dest: action.help for action in subparsers()["train"]._actions}
    assert helps["steps"].endswith("(default: the method's, listed under its name)")
    assert helps["seed"].endswith("(default: 0)") and helps["flip"].endswith("(default: True)")


def test_options_are_not_abbreviated(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["train", "--step", "50"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --step 50; did you mean --steps?" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expected", [
    (["train", "--stepz", "5"], "error: unrecognized arguments: --stepz 5; did you mean --steps? "
                                "(see textual-inversion train --help)\n"),
    (["train", "--rnak", "4"], "did you mean --rank? (see textual-inversion train --help)"),  # a method's option
    (["generate", "--promt", "x"], "did you mean --prompt? (see textual-inversion generate --help)"),
    (["--verbos", "train"], "did you mean --verbose? (see textual-inversion --help)"),
    (["train", "--xyzzy"], "error: unrecognized arguments: --xyzzy (see textual-inversion train --help)\n"),
])
def test_unknown_option_names_the_closest_and_the_sub_commands_help(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    result = cli("train", "--images", str(tmp_path / "nowhere"), "--token", "<x>", "--init-token", "cat",
                 "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --images {tmp_path / 'nowhere'}: no such folder; "
                                                  "point it at a folder holding 3-5 pictures"]
    assert "Traceback" not in result.stderr


TORCH_LOADED = ("import sys\nfrom textual_inversion.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as exit:\n"
                "    print(exit.code, 'torch' in sys.modules, 'diffusers' in sys.modules)")


@pytest.mark.parametrize("argv", [
    ["train", "--help"],
    ["train", "--images", "pics", "--token", "<x>", "--init-token", "cat", "--lr=-1"],
    ["train", "--images", "pics", "--token", "<x>", "--init-token", "cat", "--method", "pivotal", "--lora-lr", "3"],
    ["generate", "--prompt", "a <x>", "--steps", "0"],
])
def test_help_and_option_errors_answer_before_torch_is_imported(argv):
    result = subprocess.run([sys.executable, "-c", TORCH_LOADED.format(argv=argv)], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    exit_code, torch_loaded, diffusers_loaded = result.stdout.split()[-3:]
    assert exit_code == ("0" if "--help" in argv else "2")
    assert (torch_loaded, diffusers_loaded) == ("False", "False")


@pytest.mark.slow  # five subprocesses, each importing torch and diffusers
def test_train_inspect_convert_generate_end_to_end(tiny_sd1_path, image_folder, tmp_path):
    run = tmp_path / "run"
    result = cli("train", "--model", tiny_sd1_path, "--images", str(image_folder), "--token", "<blob>",
                 "--init-token", "cat", "--steps", "3", "--output-dir", str(run))
    assert result.returncode == 0, result.stderr
    assert "learned" in result.stdout and (run / "learned_embeds.safetensors").is_file()
    assert "if it falls short:" in result.stdout and "--method lora --lora-layers all" in result.stdout  # what to try next
    assert "--refine-latents" in result.stdout and "train twice as long first (--steps doubled)" in result.stdout
    assert "--timestep-bias later --timestep-bias-portion 0.1" in result.stdout  # for a striped pattern it lost

    shown = cli("inspect", str(run / "learned_embeds.safetensors"))
    assert shown.returncode == 0 and "token:    <blob>" in shown.stdout and "steps:    3" in shown.stdout
    assert "method:   textual-inversion" in shown.stdout and f"base_model: {tiny_sd1_path}" in shown.stdout

    converted = cli("convert", str(run / "learned_embeds.safetensors"), str(tmp_path / "blob.pt"), "--format", "a1111")
    assert converted.returncode == 0, converted.stderr
    assert "token:    <blob>" in cli("inspect", str(tmp_path / "blob.pt")).stdout

    made = cli("generate", "--model", tiny_sd1_path, "--concept", str(tmp_path / "blob.pt"), "--prompt",
               "a photo of <blob>", "--num-images", "2", "--steps", "2", "--output-dir", str(tmp_path / "generated"))
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == ["000000.png", "000001.png", "grid.png"]


@pytest.mark.slow  # two training subprocesses
def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tiny_sd1_path, image_folder, tmp_path):
    import re
    import signal
    import time

    run = tmp_path / "run"
    command = [sys.executable, "-m", "textual_inversion.cli", "train", "--model", tiny_sd1_path, "--images",
               str(image_folder), "--token", "<blob>", "--init-token", "cat", "--checkpoint-every", "0",
               "--output-dir", str(run)]
    # stderr goes to a file, not a pipe: polled for the progress bar without a reader competing for it,
    # and a long run cannot block on a full pipe. Interrupt once steps are done (a fixed sleep raced
    # the first step on a loaded machine).
    log = tmp_path / "stderr.txt"
    with open(log, "w") as stderr_file:
        # SIGINT back to its default in the child, as in a terminal: a test run started in the background
        # of a non-interactive shell inherits SIGINT ignored, and the child would never see the Ctrl-C.
        process = subprocess.Popen([*command, "--steps", "100000"], stderr=stderr_file, text=True,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and process.poll() is None:
                done = re.findall(r"\| *(\d+)/100000", log.read_text())
                if done and int(done[-1]) >= 3:
                    break
                time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:
            process.kill()  # a no-op once it has exited; else a failed test would leave a 100000-step run going
    stderr = log.read_text()
    assert process.returncode == 2, stderr[-500:]
    last_line = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"error: interrupted at step (\d+); saved (\S+); continue with the same command and --resume",
                         last_line)
    assert match, stderr[-500:]
    step = int(match.group(1))
    assert step > 0 and (run / "checkpoints" / f"step-{step:06d}" / "weights.safetensors").is_file()
    resumed = subprocess.run([*command, "--steps", str(step + 2), "--resume"], capture_output=True, text=True,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({step + 2} steps" in resumed.stdout
    # Where the time went: since launch (the imports included) on stdout, train's phases in its log.
    since_launch = re.search(r"; (\d+) s since launch\)", resumed.stdout)
    assert since_launch and int(since_launch.group(1)) >= 1, resumed.stdout
    assert re.search(r"loading [\d.]+ s, preparing [\d.]+ s, 2 steps [\d.]+ s \(\d+ ms a step\), writing [\d.]+ s",
                     resumed.stderr), resumed.stderr[-500:]


def test_generate_prints_the_new_folder_it_wrote(tiny_sd1_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--model", tiny_sd1_path, "--prompt", "a cat", "--num-images", "1", "--steps", "1",
              "--device", "cpu"])
    assert exit_info.value.code == 0
    folder = capsys.readouterr().out.strip().rsplit(" to ", 1)[-1]
    assert folder.startswith("outputs/") and (tmp_path / folder / "grid.png").is_file(), folder


# The `textual-inversion` command (cli.console) ends the process after the exit handlers, without the interpreter's
# teardown; everything a handler or a thread still had to do must happen first.
CONSOLE = ("import atexit, sys, threading, time\n"
           "atexit.register(lambda: print('exit handler ran', flush=True))\n"
           "{before}"
           "sys.argv = ['textual-inversion', *{argv!r}]\n"
           "from textual_inversion.cli import console\n"
           "console()\n")


@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["convert", "missing.pt", "out.safetensors"], 2)])
def test_the_command_runs_the_exit_handlers_and_keeps_the_exit_code(argv, code, tmp_path):
    result = subprocess.run([sys.executable, "-c", CONSOLE.format(before="", argv=argv)], capture_output=True,
                            text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == code, result.stderr
    assert result.stdout.rstrip().endswith("exit handler ran")
    assert ("usage: textual-inversion" in result.stdout) if code == 0 else result.stderr.startswith("error: missing.pt")


def test_the_command_ends_the_usual_way_while_a_thread_still_works(tmp_path):
    worker = ("threading.Thread(target=lambda: (time.sleep(1), print('thread finished', flush=True))).start()\n")
    result = subprocess.run([sys.executable, "-c", CONSOLE.format(before=worker, argv=["--help"])],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0 and "thread finished" in result.stdout
