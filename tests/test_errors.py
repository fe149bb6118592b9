"""The catalogue of bad input (docs/errors.md): one line on stderr, exit code 2, nothing written."""

import pickle

import pytest
import torch
from PIL import Image

from tests.conftest import draw_subject
from textual_inversion.cli import main
from textual_inversion.formats import Embedding, read_embedding, write_embedding


class RunsCode:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/textual-inversion-pwned",))


def images(tmp, *, extra=None, count=3):
    folder = tmp / "pics"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        draw_subject(folder / f"{index}.png", index)
    if extra:
        extra(folder)
    return str(folder)


def train(tmp, model, *args, images_folder=None):
    folder = images_folder if images_folder is not None else images(tmp)
    return ["train", "--model", model, "--images", folder, "--token", "<t>", "--init-token", "cat",
            "--output-dir", str(tmp / "out"), "--steps", "1", *args]


def train_weights(tmp, model, method, *args):
    """`train --method METHOD`, for the methods that learn weights and so take no --init-token."""
    return ["train", "--model", model, "--method", method, "--images", images(tmp), "--token", "sks",
            "--output-dir", str(tmp / "out"), "--steps", "1", *args]


def embedding_file(tmp, width=768, token="<e>"):
    return str(write_embedding(Embedding(token, {"text_encoder": torch.zeros(1, width)}), tmp / f"{token[1:-1]}.safetensors"))


def flux_embedding_file(tmp):
    """A Flux embedding (clip_l 768 + t5 4096), made without a Flux model."""
    vectors = {"clip_l": torch.zeros(1, 768), "t5": torch.zeros(1, 4096)}
    return str(write_embedding(Embedding("<f>", vectors, {"family": "flux"}), tmp / "f.safetensors"))


def on_flux(make_args):
    """A case whose model (`m`) is the tiny Flux pipeline instead of the tiny SD1 one."""
    make_args.model = "tiny_flux_path"
    return make_args


def generate(tmp, model, *args):
    return ["generate", "--model", model, "--output-dir", str(tmp / "out"), *args]


def evil_pickle(tmp):
    with open(tmp / "evil.pt", "wb") as handle:
        pickle.dump({"<x>": RunsCode()}, handle)
    return str(tmp / "evil.pt")


def occupied(tmp, model):
    (tmp / "out").mkdir()
    (tmp / "out" / "run.json").write_text("{}")
    return train(tmp, model)


CASES = {
    "missing image folder": (lambda t, m: train(t, m, images_folder=str(t / "nope")), "no such folder"),
    "empty image folder": (lambda t, m: train(t, m, images_folder=str((t / "empty").mkdir() or t / "empty")), "no images found"),
    "corrupt image": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: (f / "x.png").write_bytes(b"\x89PNG garbage"))), "cannot read this image"),
    "truncated image": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: (f / "x.png").write_bytes((f / "0.png").read_bytes()[:60]))), "cannot read this image"),
    "very small image": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: Image.new("RGB", (8, 8)).save(f / "x.png"))), "smaller than 32 px"),
    "caption without placeholder": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: (f / "0.txt").write_text("a cat"))), "caption has no {token}"),
    "caption not UTF-8": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: (f / "0.txt").write_bytes("a {token} café".encode("latin-1")))), "0.txt: caption is not UTF-8 text (byte 0xe9"),
    "token already a word": (lambda t, m: train(t, m, "--token", "cat"), "already in the model's vocabulary"),
    "token with spaces": (lambda t, m: train(t, m, "--token", "my cat"), "one new word without spaces"),
    "empty initializer": (lambda t, m: train(t, m, "--init-token", " "), "--init-token is required"),
    "zero vectors": (lambda t, m: train(t, m, "--vectors", "0"), "--vectors 0: must be at least 1"),
    "absurd vectors": (lambda t, m: train(t, m, "--vectors", "1000"), "at most 75 tokens"),
    "validation prompt without token": (lambda t, m: train(t, m, "--validation-prompt", "a cat"), "does not contain the token <t>"),
    "learning rate out of range": (lambda t, m: train(t, m, "--lr", "5"), "--lr 5.0: must be between 0 and 1"),
    "invalid choice": (lambda t, m: train(t, m, "--crop", "middle"), "argument --crop: invalid choice"),
    "not a number": (lambda t, m: train(t, m, "--steps", "many"), "argument --steps: invalid int value"),
    "conflicting options": (lambda t, m: train(t, m, "--class-prompt", "a cat"), "--class-prompt (prior preservation) works with"),
    "fp16 without a GPU": (lambda t, m: train(t, m, "--mixed-precision", "fp16"), "fp16 needs a CUDA GPU"),
    "GPU asked for, none there": (lambda t, m: train(t, m, "--device", "cuda"), "no CUDA GPU is available"),
    "unwritable output folder": (lambda t, m: train(t, m, "--output-dir", "/proc/forbidden"), "cannot write there"),
    "output folder holds another run": (occupied, "holds another run"),
    "resume without checkpoint": (lambda t, m: train(t, m, "--resume"), "holds no checkpoint"),
    "bad TOML": (lambda t, m: ["train", "--config", str((t / "c.toml").write_text("x = = 1") and t / "c.toml")], "not valid TOML"),
    "unknown TOML option": (lambda t, m: ["train", "--config", str((t / "c.toml").write_text("stepz = 1") and t / "c.toml")], "unknown option 'stepz'"),
    "model folder that is not a model": (lambda t, m: train(t, str(t)), "not a diffusers model folder"),
    "unknown model id offline": (lambda t, m: train(t, "nobody/no-model"), "offline"),
    "embedding for another model": (lambda t, m: ["generate", "--model", m, "--concept", embedding_file(t, 1024), "--prompt", "<e>", "--output-dir", str(t / "out")], "needs text_encoder 768"),
    "token no concept defines": (lambda t, m: ["generate", "--model", m, "--prompt", "a <who>", "--output-dir", str(t / "out")], "<who> but no loaded --concept defines it"),
    "file that is not an embedding": (lambda t, m: ["inspect", str((t / "a.safetensors").write_text("hi") and t / "a.safetensors")], "not a readable .safetensors"),
    "pickle that would run code": (lambda t, m: ["inspect", evil_pickle(t)], "refused"),
    "missing embedding file": (lambda t, m: ["convert", str(t / "none.pt"), str(t / "out.pt")], "no such embedding file"),
    "unknown output type": (lambda t, m: ["convert", embedding_file(t), str(t / "out.txt")], "unknown output type"),
    "convert onto its own input": (lambda t, m: ["convert", embedding_file(t), str(t / "." / "e.safetensors"), "--format", "kohya"], "is the input file itself"),
    "mask of another shape": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: Image.new("L", (10, 30)).save(f / "0.mask.png"))), "0.mask.png: mask is 10x30 but its picture 0.png is 48x40"),
    "mask without its picture": (lambda t, m: train(t, m, images_folder=images(t, extra=lambda f: Image.new("L", (48, 40)).save(f / "9.mask.png"))), "mask 9.mask.png has no picture beside it"),
    "mask weight out of range": (lambda t, m: train(t, m, "--mask-weight", "2"), "--mask-weight 2.0: must be between 0"),
    "negative latent refinement": (lambda t, m: train(t, m, "--refine-latents", "-1"),
                                   "--refine-latents -1: give a number of steps"),
    "stop when learned off miniworld": (lambda t, m: train(t, m, "--stop-when-learned"),
                                        "--stop-when-learned reads images with miniworld's judge"),
    "picture that holds no embedding": (lambda t, m: ["inspect", str(Image.new("RGB", (40, 40)).save(t / "p.png") or t / "p.png")], "a plain picture, not an embedding"),
    "init embedding for another model": (lambda t, m: train(t, m, "--init-token", "", "--init-embedding", embedding_file(t, 1024)), "--init-embedding"),
    "negative prompt weight": (lambda t, m: ["generate", "--model", m, "--prompt", "a (cat:-1)", "--output-dir", str(t / "out")], "weight -1 is negative"),
    "merge of different families": (lambda t, m: ["merge", embedding_file(t), embedding_file(t, 1024, "<f>"), "-o", str(t / "m.safetensors")], "f.safetensors"),
    "export of a folder that is no run": (lambda t, m: ["export", str(t / "nothing"), str(t / "shared")], "no such run folder"),
    "pick of folders that are no runs": (lambda t, m: ["pick", str(t), str(t / "nothing")], "no readable run.json"),
    "single file offline without its config": (lambda t, m: train(t, str((t / "m.safetensors").write_bytes(b"\x00" * 16) and t / "m.safetensors")), "cannot read this checkpoint"),
    "--ti-encoders naming no encoder of the model": (on_flux(lambda t, m: train(t, m, "--ti-encoders", "clip_g")), "--ti-encoders clip_g: this model's text encoders are clip_l, t5"),
    "--ti-encoders on an SD model": (lambda t, m: train(t, m, "--ti-encoders", "clip_l"), "on this model every text encoder learns the token; leave it out"),
    "--per-layer on a Flux model": (on_flux(lambda t, m: train(t, m, "--per-layer")), "--per-layer: for SD 1.x, 2.x and miniworld (one text encoder and a UNet); leave it out"),
    "--context-weight with --per-layer": (lambda t, m: train(t, m, "--per-layer", "--context-weight", "0.5"), "--context-weight 0.5 compares the token with --init-token's word in one text encoding; leave it out with --per-layer"),
    "--context-weight on a Flux model": (on_flux(lambda t, m: train(t, m, "--context-weight", "1")), "--context-weight 1.0: for the UNet families (CLIP text encoders); leave it out"),
    "--per-layer with pivotal tuning": (lambda t, m: train(t, m, "--method", "pivotal", "--per-layer"), "--per-layer is an option of --method textual-inversion"),
    "--timestep-bias on Flux": (on_flux(lambda t, m: train(t, m, "--timestep-bias", "later", "--timestep-bias-multiplier", "9")), "--timestep-bias works on UNet models (SD 1.x/2.x, SDXL, miniworld); flux draws"),
    "--timestep-bias-end past the schedule": (lambda t, m: train(t, m, "--timestep-bias", "range", "--timestep-bias-multiplier", "9", "--timestep-bias-end", "5000"), "--timestep-bias-end 5000: this model's schedule has 1000 timesteps"),
    "dreambooth on a transformer-family model": (on_flux(lambda t, m: train_weights(t, m, "dreambooth")), "--method dreambooth: not available for flux models"),
    "--kohya-copy on Flux": (on_flux(lambda t, m: train_weights(t, m, "lora", "--kohya-copy")), "--kohya-copy: the kohya layout is written for SD 1.x, 2.x and XL only, not flux"),
    "--lora-layers on Flux": (on_flux(lambda t, m: train_weights(t, m, "lora", "--lora-layers", "all")), "--lora-layers all: flux is a transformer"),
    "--bundle on Flux": (on_flux(lambda t, m: train(t, m, "--method", "pivotal", "--bundle")), "--bundle: AUTOMATIC1111's bundle layout is for SD 1.x, 2.x and XL, not flux"),
    "--scheduler on Flux": (on_flux(lambda t, m: generate(t, m, "--prompt", "a cat", "--scheduler", "euler")), "--scheduler euler: flux samples with its own flow-matching scheduler"),
    "prompt weights on Flux": (on_flux(lambda t, m: generate(t, m, "--prompt", "a (cat:1.3)")), "weights like (word:1.3) work with SD 1.x, 2.x and XL, not flux"),
    "Flux embedding in an SD model": (lambda t, m: generate(t, m, "--concept", flux_embedding_file(t), "--prompt", "<f>"), "(clip_l 768, t5 4096) fit Flux.1"),
    "convert of a Flux embedding to a1111": (lambda t, m: ["convert", flux_embedding_file(t), str(t / "a.safetensors"), "--format", "a1111"], "--format a1111: Flux.1 (clip_l and/or t5) embeddings are written as diffusers"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_line_and_writes_nothing(case, request, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    make_args, expected = CASES[case]
    args = make_args(tmp_path, request.getfixturevalue(getattr(make_args, "model", "tiny_sd1_path")))
    capsys.readouterr()  # a tiny model built just now has printed its progress
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err
    created = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in created if p.is_file() and "hub" not in p.parts], f"wrote {created}"


def test_convert_never_rewrites_its_input_unasked(tmp_path, capsys, monkeypatch):
    source = tmp_path / "e.safetensors"
    embedding_file(tmp_path)
    original = source.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(source)
    (tmp_path / "hard.safetensors").hardlink_to(source)
    monkeypatch.chdir(tmp_path)
    for output in (str(source), "e.safetensors", f"{tmp_path}/../{tmp_path.name}/e.safetensors",
                   "link.safetensors", "hard.safetensors"):
        with pytest.raises(SystemExit) as exit_info:
            main(["convert", str(source), output, "--format", "kohya"])
        assert exit_info.value.code == 2, output
        assert "is the input file itself" in capsys.readouterr().err, output
        assert source.read_bytes() == original, output
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "e.safetensors", str(source), "--format", "kohya", "--overwrite"])
    assert exit_info.value.code == 0 and source.read_bytes() != original
    assert read_embedding(source).token == "<e>"
