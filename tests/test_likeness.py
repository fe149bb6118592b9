"""`textual-inversion pick`: runs of one concept ranked by how like their training pictures they draw."""

import json

import pytest
import torch
from PIL import Image, ImageDraw

from textual_inversion import UserError, cli
from textual_inversion.images import to_tensor
from textual_inversion.likeness import (
    close_call,
    geometric_mean,
    gram_distance,
    gram_matrices,
    rank_runs,
)
from textual_inversion.models import load_pipeline
from textual_inversion.training import train


def square_picture(left: int, striped: bool) -> Image.Image:
    """A 32 x 32 grey picture with a 12-pixel square at `left`, solid red or red and white stripes."""
    image = Image.new("RGB", (32, 32), (128, 128, 128))
    draw = ImageDraw.Draw(image)
    for row in range(12):
        colour = (255, 255, 255) if striped and row % 4 < 2 else (220, 30, 30)
        draw.line((left, 10 + row, left + 11, 10 + row), fill=colour)
    return image


def test_gram_distance_is_zero_for_the_same_picture_and_broadcasts_one_reference():
    generated = [torch.randn(3, 4, 4), torch.randn(3, 6, 6)]
    reference = [g[:1] for g in generated]
    distance = gram_distance(generated, reference)
    assert distance.shape == (3,)
    assert distance[0] == 0 and (distance[1:] > 0).all()
    doubled = gram_distance([2 * g for g in generated], generated)
    assert torch.allclose(doubled, torch.ones(3))  # |2G - G| / |G|


def test_gram_matrices_hold_texture_rather_than_position(tiny_sd1_path):
    vae = load_pipeline(tiny_sd1_path).vae
    pictures = to_tensor([square_picture(4, False), square_picture(16, False), square_picture(4, True)])
    with torch.no_grad():
        grams = gram_matrices(vae, pictures)
    channels = vae.config.block_out_channels[0]  # the input convolution's
    assert [tuple(g.shape) for g in grams] == [(3, channels, channels)]
    assert all(torch.allclose(g, g.transpose(1, 2)) for g in grams)
    moved, striped = gram_distance([g[1:] for g in grams], [g[:1] for g in grams]).tolist()
    assert moved < striped / 3


def test_close_call_is_the_runner_ups_margin_under_a_fifth():
    assert close_call([0.040, 0.044, 0.09]) == pytest.approx(0.1)  # only the runner-up counts
    assert close_call([0.040, 0.050]) is None  # 25 %: a margin every measured pick got right


@pytest.fixture
def two_runs(train_config, image_folder, tmp_path):
    """Two finished runs of the fixture pictures, each with a caption file."""
    for index in range(4):
        (image_folder / f"{index}.txt").write_text(f"a photo of {{token}} number {index}")
    first = train(train_config.replaced(output_dir=str(tmp_path / "first")))
    second = train(train_config.replaced(output_dir=str(tmp_path / "second"), seed=1, steps=3, checkpoint_every=0))
    return first.output_dir, second.output_dir


def test_rank_runs_orders_two_runs_by_their_distance(two_runs, capsys, monkeypatch):
    ranked = rank_runs(list(two_runs), num_images=2, steps=2)
    assert sorted(r.run for r in ranked) == sorted(two_runs)
    assert ranked[0].distance <= ranked[1].distance
    assert all(r.pictures == 8 for r in ranked)  # 4 pictures x 2 drawn for each
    for likeness in ranked:  # a row per training picture: it, then the 2 drawn from its caption
        assert likeness.grid == likeness.run / "pick.png"
        with Image.open(likeness.grid) as grid:
            side = grid.width // 3  # the tiny model draws squares
            assert grid.size == (3 * side, 4 * side)
    assert [r.distance for r in rank_runs(list(two_runs), num_images=2, steps=2)] == [r.distance for r in ranked]

    pick = ["pick", *map(str, two_runs), "--num-images", "1", "--steps", "2"]
    monkeypatch.setattr("textual_inversion.likeness.CLOSE_MARGIN", 0.0)  # never close
    assert cli.run(pick) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("nearest to its training pictures: ")
    assert all("(4 pictures: " in line and line.endswith("pick.png)") for line in lines[:2])
    monkeypatch.setattr("textual_inversion.likeness.CLOSE_MARGIN", float("inf"))  # always close
    assert cli.run(pick) == 0
    lines = capsys.readouterr().out.splitlines()
    runner_up = lines[1].split()[1]
    assert len(lines) == 4 and lines[3].startswith(f"close: {runner_up} is only ")


def test_a_run_folder_that_takes_no_file_is_still_ranked(two_runs, capsys, monkeypatch, caplog):
    def read_only(images, path, columns=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("textual_inversion.generation.save_grid", read_only)
    ranked = rank_runs(list(two_runs), num_images=1, steps=1)
    assert sorted(r.run for r in ranked) == sorted(two_runs) and all(r.grid is None for r in ranked)
    assert "pick.png: not written (Permission denied)" in caplog.text
    monkeypatch.setattr("textual_inversion.likeness.CLOSE_MARGIN", 0.0)
    assert cli.run(["pick", *map(str, two_runs), "--num-images", "1", "--steps", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.endswith("(4 pictures: pick.png not written)") for line in lines[:2])
    assert lines[2] == f"nearest to its training pictures: {ranked[0].run}"


def test_each_picture_is_drawn_from_its_own_caption(two_runs, monkeypatch):
    from diffusers import StableDiffusionPipeline

    prompts = []
    draw = StableDiffusionPipeline.__call__

    def recording(pipe, prompt, **options):
        prompts.append(prompt)
        return draw(pipe, prompt, **options)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", recording)
    rank_runs(list(two_runs), num_images=1, steps=1)
    assert prompts == [f"a photo of <blob> number {index}" for index in range(4)] * 2


def test_pick_refuses_what_it_cannot_compare(two_runs, tmp_path, train_config, image_folder):
    with pytest.raises(UserError, match="two or more run folders"):
        rank_runs([two_runs[0]])
    with pytest.raises(UserError, match="no readable run.json"):
        rank_runs([two_runs[0], tmp_path])
    with pytest.raises(UserError, match="--num-images 0: must be 1 or more"):
        rank_runs(list(two_runs), num_images=0)
    (image_folder / "2.txt").unlink()
    with pytest.raises(UserError, match=r"2.png: no caption file; .* write 2.txt"):
        rank_runs(list(two_runs), steps=1)
    (image_folder / "2.txt").write_text("a photo of {token} number 2")

    record = json.loads((two_runs[1] / "run.json").read_text())
    (two_runs[1] / "run.json").write_text(json.dumps({**record, "status": "stopped"}))
    with pytest.raises(UserError, match="has not finished"):
        rank_runs(list(two_runs))

    other = tmp_path / "other-images"
    other.mkdir()
    for index in range(2):
        Image.new("RGB", (32, 32), (0, 90 * index, 200)).save(other / f"{index}.png")
    elsewhere = train(train_config.replaced(images=str(other), output_dir=str(tmp_path / "elsewhere"), steps=2,
                                            checkpoint_every=0))
    with pytest.raises(UserError, match="learned from the same pictures"):
        rank_runs([two_runs[0], elsewhere.output_dir])


def test_the_geometric_mean_weighs_each_picture_by_its_ratio_not_its_size():
    assert geometric_mean([0.01, 1.0]) == pytest.approx(0.1)
    # The second run is nearer on one picture by a large absolute amount and farther on two by a factor 2.
    first, second = [0.01, 0.01, 1.0], [0.02, 0.02, 0.5]
    assert sum(first) > sum(second) and geometric_mean(first) < geometric_mean(second)
    assert geometric_mean([0.0, 1.0]) > 0  # a picture drawn exactly as its training picture
