"""`python -m textual_inversion.miniworld.build` is reproducible: the same seed writes the same bytes.

The shipped model takes ~90 CPU minutes to rebuild, so the check runs the same code path (VAE,
latent cache, UNet + text encoder, decoder refinement, export) for a handful of steps, twice.
"""

import dataclasses
import json
import random
import re
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from textual_inversion.miniworld.build import (
    TWIN_TIMESTEPS,
    cache_latents,
    draw_batch,
    hidden_share,
    twin_index,
)
from textual_inversion.miniworld.build import main as build
from textual_inversion.miniworld.captions import caption
from textual_inversion.miniworld.world import COLOURS, HIDDEN_COLOUR, random_scene

TINY_BUILD = ["--threads", "1", "--vae-steps", "3", "--vae-batch", "2", "--cache-size", "16", "--unet-steps", "3",
              "--batch-size", "4", "--decoder-steps", "2", "--save-every", "2"]


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """The build sets torch's thread count (--threads 1); the tests after this one keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def weight_files(folder: Path) -> dict[str, dict]:
    return {str(p.relative_to(folder)): load_file(p) for p in sorted(folder.rglob("*.safetensors"))}


@pytest.mark.slow  # three builds
def test_same_seed_builds_identical_weights(tmp_path):
    build([*TINY_BUILD, "--output", str(tmp_path / "a" / "model")])
    build([*TINY_BUILD, "--output", str(tmp_path / "b" / "model")])
    build([*TINY_BUILD, "--seed", "1", "--output", str(tmp_path / "c" / "model")])
    a, b, c = (weight_files(tmp_path / name / "model") for name in "abc")
    assert set(a) >= {"unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                      "vae/diffusion_pytorch_model.safetensors"}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(a[name][k].equal(b[name][k]) for k in a[name]), f"{name} differs between two builds with seed 0"
    assert any(not a[name][k].equal(c[name][k]) for name in a for k in a[name]), "seed 1 built the same weights"
    probe = tmp_path / "probe"
    probe.touch()  # a new file's mode under this process's umask
    modes = {str(p.relative_to(tmp_path / "a")): stat.S_IMODE(p.stat().st_mode)
             for p in (tmp_path / "a").rglob("*") if p.is_file()}
    assert set(modes.values()) == {stat.S_IMODE(probe.stat().st_mode)}, modes  # safetensors' own files are 0600
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["model"]  # no staging folder left beside it


@pytest.mark.slow  # a build, two continuations (pattern twins; 16x16 attention), an encoder refinement
def test_continue_from_trains_the_unet_further_and_keeps_the_vae(tmp_path):
    build([*TINY_BUILD, "--output", str(tmp_path / "a" / "model")])
    continuation = ["--threads", "1", "--cache-size", "8", "--unet-steps", "2", "--batch-size", "4", "--warmup", "1",
                    "--seed", "1", "--continue-from", str(tmp_path / "a" / "model")]
    build([*continuation, "--pattern-twins", "0.5", "--twin-weight", "0.3", "--output", str(tmp_path / "b" / "model")])
    build([*continuation, "--full-resolution-attention", "--output", str(tmp_path / "c" / "model")])
    unet_config = json.loads((tmp_path / "c" / "model" / "unet" / "config.json").read_text())
    assert unet_config["down_block_types"][0] == "CrossAttnDownBlock2D"
    assert unet_config["up_block_types"][-1] == "CrossAttnUpBlock2D"
    a, b = (weight_files(tmp_path / name / "model") for name in "ab")
    assert a.keys() == b.keys()
    vae = "vae/diffusion_pytorch_model.safetensors"
    assert all(a[vae][k].equal(b[vae][k]) for k in a[vae]), "the continuation changed the VAE"
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert any(not a[unet][k].equal(b[unet][k]) for k in a[unet]), "the continuation left the UNet as it was"
    scale = [json.loads((tmp_path / name / "model" / "vae" / "config.json").read_text())["scaling_factor"]
             for name in "ab"]
    assert scale[0] == scale[1]
    # The encoder refined on the continuation: only the encoder's weights change.
    build(["--threads", "1", "--vae-batch", "2", "--only-refine-encoder", "2", "--output", str(tmp_path / "b" / "model")])
    refined = weight_files(tmp_path / "b" / "model")
    changed = {k for k in b[vae] if not b[vae][k].equal(refined[vae][k])}
    assert changed and all(k.startswith(("encoder.", "quant_conv.")) for k in changed), changed
    assert all(b[name][k].equal(refined[name][k]) for name in b if name != vae for k in b[name])


@pytest.mark.parametrize("argv, message", [
    (["--pattern-twins", "0.25", "--twin-weight", "0"], "--twin-weight 0.0: give a weight above 0"),
    (["--twin-weight", "0.5"], "--twin-weight only scales pattern twins' loss; give --pattern-twins too"),
    (["--hidden-colour-prob", "0"], "--hidden-colour-prob 0.0: give a share between 0 and 1"),
    (["--hidden-colour-prob", "1.5"], "--hidden-colour-prob 1.5: give a share between 0 and 1"),
    (["--only-refine-encoder", "-5"], "--only-refine-encoder -5: give a number of steps above 0"),
])
def test_build_options_that_cannot_work_say_so(argv, message, capsys):
    with pytest.raises(SystemExit):
        build(argv)
    assert message in capsys.readouterr().err


def test_continue_from_a_folder_without_a_pipeline_says_so(tmp_path):
    with pytest.raises(SystemExit, match="--continue-from .*no unet/ and text_encoder/ there"):
        build(["--continue-from", str(tmp_path), "--output", str(tmp_path / "out")])


def test_pattern_twins_share_noise_timestep_and_words_but_the_pattern():
    """build --pattern-twins: each pair is one scene with two patterns, denoised from the same noise at the same
    high timestep and captioned from the same draws; the rest of the batch is drawn as usual."""
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(20)]
    scenes += [dataclasses.replace(s, pattern="dotted" if s.pattern != "dotted" else "solid") for s in scenes[:10]]
    latents = torch.randn(len(scenes), 4, 16, 16)
    twin = twin_index(scenes)
    assert twin[:10].tolist() == list(range(20, 30)) and twin[10:20].tolist() == [-1] * 10
    assert twin[20:].tolist() == list(range(10))
    z0, texts, t, noise = draw_batch(scenes, latents, torch.zeros_like(latents), 1.0, 8, 0.0, 1000,
                                     torch.Generator().manual_seed(0), random.Random(1), pairs=3, twin=twin)
    drawn = [next(i for i in range(len(scenes)) if latents[i].equal(z)) for z in z0]  # stds 0: z0 is a latent
    for a, b in ((0, 1), (2, 3), (4, 5)):
        assert twin[drawn[a]] == drawn[b]
        assert t[a] == t[b] and t[a] >= TWIN_TIMESTEPS[0] and noise[a].equal(noise[b])
        if "solid" not in (scenes[drawn[a]].pattern, scenes[drawn[b]].pattern):  # solid's word takes a draw of its own
            assert [w for w in texts[a].split() if w != scenes[drawn[a]].pattern] == \
                [w for w in texts[b].split() if w != scenes[drawn[b]].pattern], (texts[a], texts[b])
    assert t[6] != t[7] or not noise[6].equal(noise[7])


@pytest.mark.parametrize("hidden_colour_prob", [0.06, 0.02])
def test_hidden_share_is_what_the_world_captions_without_a_colour_word(hidden_colour_prob):
    """build --hidden-colour-prob: the formula its help gives for how often a caption with no colour word shows the
    hidden colour agrees with scenes and captions as the build draws them."""
    rng = random.Random(0)
    colourless = []
    for _ in range(40000):
        scene = random_scene(rng, hidden_colour_prob=hidden_colour_prob)
        words = re.findall(r"[a-z]+", caption(scene, rng))  # "heart, red, big": the comma form too
        if not any(c in words for c in COLOURS if c != HIDDEN_COLOUR):
            colourless.append(scene.colour == HIDDEN_COLOUR)
    assert HIDDEN_COLOUR not in " ".join(caption(random_scene(rng, hidden_colour_prob=1.0), rng) for _ in range(50))
    assert sum(colourless) / len(colourless) == pytest.approx(hidden_share(hidden_colour_prob), abs=0.02)


def test_cache_latents_renders_the_hidden_colour_at_the_share_asked():
    """build --hidden-colour-prob reaches the scenes the UNet trains on (the VAE here passes pixels through)."""
    passthrough = SimpleNamespace(encode=lambda x: SimpleNamespace(latent_dist=SimpleNamespace(mean=x, std=x)))
    shares = []
    for hidden_colour_prob in (0.02, 0.5):
        scenes, _, _ = cache_latents(passthrough, 600, random.Random(0), hidden_colour_prob=hidden_colour_prob)
        shares.append(sum(s.colour == HIDDEN_COLOUR for s in scenes) / len(scenes))
    assert shares[0] == pytest.approx(0.02, abs=0.02) and shares[1] == pytest.approx(0.5, abs=0.07)
