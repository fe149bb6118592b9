"""AUTOMATIC1111's embedding PNG: round trips, a file built as A1111 builds it, plain pictures, the CLI."""

import base64
import json
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from textual_inversion import GenerateConfig, UserError, generate
from textual_inversion.cli import main, run
from textual_inversion.formats import Embedding, read_embedding, write_embedding
from textual_inversion.png_embedding import scramble_nibbles

# The first values of A1111's scramble sequence, from the self-test in its image_embedding.py.
A1111_SEQUENCE_START = [253, 242, 127, 44, 157, 27, 239, 133, 38, 79, 167, 4, 177, 95, 130, 79, 78, 14, 52, 215]


def a1111_sequence():
    """A1111's linear congruential generator, written out here apart from the module's."""
    state = 0
    while True:
        state = (1664525 * state + 1013904223) % 2**32
        yield state % 255


def a1111_json(data: dict) -> bytes:
    """The embedding dict as A1111 encodes it: each tensor as {"TORCHTENSOR": nested lists}."""
    class Encoder(json.JSONEncoder):
        def default(self, value):
            if isinstance(value, torch.Tensor):
                return {"TORCHTENSOR": value.cpu().numpy().tolist()}
            return super().default(value)

    return json.dumps(data, cls=Encoder).encode()


def a1111_picture(picture: Image.Image, data: dict) -> Image.Image:
    """`picture` with `data` in side bands, step by step as A1111 lays them out (its padding by repetition
    included; random high bits stand in for its dotted decoration, which carries nothing)."""
    compressed = np.frombuffer(zlib.compress(a1111_json(data), level=9), np.uint8)
    height = picture.height
    size = compressed.size + (height - compressed.size % height)
    size += 3 * height - size % (3 * height)
    rng = np.random.default_rng(0)
    bands = []
    for nibbles in (compressed & 0x0F, compressed >> 4):
        block = np.resize(nibbles, size).reshape(height, -1, 3)
        block = block | (rng.integers(0, 16, block.shape) << 4)
        sequence = a1111_sequence()
        mask = np.array([next(sequence) for _ in range(block.size)]).reshape(block.shape) & 0x0F
        bands.append(Image.fromarray((block ^ mask).astype(np.uint8)))
    low, high = bands
    canvas = Image.new("RGB", (low.width + 1 + picture.width + 1 + high.width, height), (0, 0, 0))
    canvas.paste(low, (0, 0))
    canvas.paste(picture, (low.width + 1, 0))
    canvas.paste(high, (low.width + 1 + picture.width + 1, 0))
    return canvas


@pytest.fixture
def embedding():
    vectors = torch.randn(3, 768, generator=torch.Generator().manual_seed(1))
    return Embedding("<blob>", {"text_encoder": vectors}, {"steps": "6", "base_model": "tiny-sd1"})


def noise_picture(size=(64, 48)) -> Image.Image:
    pixels = np.random.default_rng(5).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_round_trip_keeps_vectors_token_and_metadata(embedding, tmp_path):
    path = write_embedding(embedding, tmp_path / "blob.png", "a1111-png")
    read = read_embedding(path)
    assert torch.equal(read.vectors["text_encoder"], embedding.vectors["text_encoder"])
    assert (read.token, read.family, read.file_format) == ("<blob>", "sd1", "a1111 .png")
    assert read.metadata["steps"] == "6" and read.metadata["base_model"] == "tiny-sd1"
    with Image.open(path) as image:  # a 512 x 512 card plus the two bands and their separators
        assert image.height == 512 and image.width > 514 and "sd-ti-embedding" in image.text


def test_the_preview_is_shown_and_the_pixels_alone_carry_the_embedding(embedding, tmp_path):
    """An image host strips the text chunks: the bands beside the picture still hold the embedding."""
    picture = noise_picture()
    path = write_embedding(embedding, tmp_path / "blob.png", "a1111-png", preview=picture)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
        image.save(tmp_path / "stripped.png")  # Pillow writes no text chunk unless given one
    columns = [x for x in range(pixels.shape[1] - picture.width + 1)
               if np.array_equal(pixels[:, x:x + picture.width], np.asarray(picture))]
    assert len(columns) == 1  # the preview sits unchanged between the bands
    with Image.open(tmp_path / "stripped.png") as stripped:
        assert "sd-ti-embedding" not in stripped.text
    read = read_embedding(tmp_path / "stripped.png")
    assert torch.equal(read.vectors["text_encoder"], embedding.vectors["text_encoder"])
    assert read.token == "<blob>"  # from the name A1111's dict carries


def test_scramble_sequence_is_a1111s():
    sequence = a1111_sequence()
    assert [next(sequence) for _ in range(20)] == A1111_SEQUENCE_START
    assert scramble_nibbles(20).tolist() == [value & 0x0F for value in A1111_SEQUENCE_START]


@pytest.mark.parametrize("carrier", ["text chunk", "pixels"])
def test_reads_a_png_built_as_a1111_builds_it(carrier, tmp_path):
    vectors = torch.randn(2, 768, generator=torch.Generator().manual_seed(2))
    data = {"string_to_token": {"*": 265}, "string_to_param": {"*": vectors}, "name": "probe", "step": 3,
            "sd_checkpoint": "0123abcd", "sd_checkpoint_name": "v1-5-pruned"}
    info = PngImagePlugin.PngInfo()
    if carrier == "text chunk":
        info.add_text("sd-ti-embedding", base64.b64encode(a1111_json(data)))  # bytes, as A1111 passes them
        picture = noise_picture()
    else:
        picture = a1111_picture(noise_picture(), data)
    picture.save(tmp_path / "probe-3.png", "PNG", pnginfo=info)
    read = read_embedding(tmp_path / "probe-3.png")
    assert torch.equal(read.vectors["text_encoder"], vectors)
    assert read.token == "probe"
    assert (read.metadata["step"], read.metadata["sd_checkpoint_name"]) == ("3", "v1-5-pruned")


def test_sdxl_png_holds_exactly_clip_l_and_clip_g(tmp_path):
    """A1111 reads SDXL vectors from a PNG's dict only when it holds nothing else; the token travels in our chunk."""
    generator = torch.Generator().manual_seed(3)
    sdxl = Embedding("<xl>", {"clip_l": torch.randn(2, 768, generator=generator),
                              "clip_g": torch.randn(2, 1280, generator=generator)})
    path = write_embedding(sdxl, tmp_path / "xl.png", "a1111-png")
    with Image.open(path) as image:
        assert set(json.loads(base64.b64decode(image.text["sd-ti-embedding"]))) == {"clip_l", "clip_g"}
    read = read_embedding(path)
    assert read.token == "<xl>" and read.family == "sdxl"
    assert all(torch.equal(read.vectors[key], sdxl.vectors[key]) for key in ("clip_l", "clip_g"))


def test_a_plain_or_damaged_png_is_a_user_error(tmp_path):
    noise_picture().save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="plain.png: a plain picture, not an embedding"):
        read_embedding(tmp_path / "plain.png")
    info = PngImagePlugin.PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(b'{"string_to_param": {"*": {"TORCHTENSOR": [[1.0], [2.0, 3.0]]}}}'))
    noise_picture().save(tmp_path / "damaged.png", pnginfo=info)
    with pytest.raises(UserError, match="damaged.png: the embedding in this PNG is damaged"):
        read_embedding(tmp_path / "damaged.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(UserError, match="text.png: not a readable PNG embedding"):
        read_embedding(tmp_path / "text.png")


def test_convert_and_inspect_on_the_command_line(embedding, tmp_path, capsys):
    source = write_embedding(embedding, tmp_path / "blob.safetensors")
    noise_picture().save(tmp_path / "preview.jpg")
    assert run(["convert", str(source), str(tmp_path / "blob.png"), "--format", "a1111-png",
                "--preview", str(tmp_path / "preview.jpg")]) == 0
    assert torch.equal(read_embedding(tmp_path / "blob.png").vectors["text_encoder"], embedding.vectors["text_encoder"])
    assert run(["inspect", str(tmp_path / "blob.png")]) == 0
    assert "token:    <blob>" in capsys.readouterr().out
    for wrong in (["--format", "a1111-png"], ["--format", "a1111"]):  # .pt for a picture; .png for a .pt layout
        output = "blob.pt" if wrong[1] == "a1111-png" else "blob2.png"
        with pytest.raises(SystemExit) as exited:
            main(["convert", str(source), str(tmp_path / output), *wrong])
        error = capsys.readouterr().err
        assert exited.value.code == 2 and error.count("\n") == 1 and output in error
    assert not (tmp_path / "blob.pt").exists() and not (tmp_path / "blob2.png").exists()


def test_generate_with_a_png_concept_matches_its_source(embedding, tiny_sd1_path, tmp_path):
    source = write_embedding(embedding, tmp_path / "blob.safetensors")
    picture = write_embedding(embedding, tmp_path / "blob.png", "a1111-png")

    def image_from(concept, folder):
        config = GenerateConfig(model=tiny_sd1_path, concept=[str(concept)], prompt="a photo of <blob>", num_images=1,
                                steps=2, seed=4, output_dir=str(tmp_path / folder))
        return np.asarray(Image.open(generate(config)[0]))

    assert np.array_equal(image_from(picture, "from-png"), image_from(source, "from-safetensors"))
