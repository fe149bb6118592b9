"""Shared fixtures: tiny SD1, SDXL, Flux, SD3 and Z-Image pipelines built once per session, and a folder of
images."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

# (device, precision) of the mixed-precision tests: bf16 on the CPU always, so that CI covers mixed precision
# (previews, class pictures, the UNet's precision); fp16 needs a GPU.
MIXED_PRECISION_RUNS = [("cpu", "bf16")] + ([("cuda", "fp16"), ("cuda", "bf16")] if torch.cuda.is_available() else [])


@pytest.fixture(scope="session")
def tiny_sd1_path(tmp_path_factory):
    from textual_inversion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sd1")
    build_tiny_pipeline("sd1", folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory):
    from textual_inversion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_pipeline("sdxl", folder)
    return str(folder)


def build_tiny(family: str, tmp_path_factory) -> str:
    """A tiny random `family` pipeline in a new session folder (the transformer families: flux, sd3, z-image)."""
    from textual_inversion.tiny import build_tiny_pipeline

    folder = tmp_path_factory.mktemp(f"tiny-{family}")
    build_tiny_pipeline(family, folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_flux_path(tmp_path_factory):
    return build_tiny("flux", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_sd3_path(tmp_path_factory):
    return build_tiny("sd3", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_z_image_path(tmp_path_factory):
    return build_tiny("z-image", tmp_path_factory)


def draw_subject(path, index: int, size=(48, 40)) -> None:
    """A blue disc on a warm background, moved a little per image."""
    image = Image.new("RGB", size, (200, 40 * index, 30))
    ImageDraw.Draw(image).ellipse((4 + 2 * index, 4, 28 + 2 * index, 28), fill=(20, 40, 230))
    image.save(path)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(4):
        draw_subject(folder / f"{index}.png", index)
    return folder


@pytest.fixture
def train_config(tiny_sd1_path, image_folder, tmp_path):
    """A very short TI run on the tiny SD1 model."""
    from textual_inversion import TrainConfig

    return TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", options={"init_token": "cat"},
                       steps=6, lr=0.05, batch_size=2, checkpoint_every=3, output_dir=str(tmp_path / "run"))
