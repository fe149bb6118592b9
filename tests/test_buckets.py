"""Aspect-ratio buckets, masks and the pictures people actually bring: mixed sizes, one with an alpha mask."""

import dataclasses

import pytest
import torch
from PIL import Image, ImageDraw

from textual_inversion.buckets import bucket_sizes, nearest_bucket, picture_sizes
from textual_inversion.data import LatentCache, TrainingData, draw_batch, encode_images, read_training_data
from textual_inversion.errors import UserError


def test_buckets_hold_the_pixel_budget_within_two_to_one():
    buckets = bucket_sizes(512, 64)
    assert buckets == [(384, 640), (448, 576), (512, 512), (576, 448), (640, 384)]  # as kohya's for SD 1.5
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)


def test_each_picture_goes_to_the_bucket_nearest_its_shape():
    buckets = bucket_sizes(1024, 32)
    assert nearest_bucket(4032, 3024, buckets) == (1184, 864)  # a 4:3 phone photo, landscape (1.37)
    assert nearest_bucket(1080, 1920, buckets) == (768, 1344)  # 9:16 portrait
    assert nearest_bucket(700, 700, buckets) == (1024, 1024)
    assert nearest_bucket(3000, 500, buckets) == (1408, 736)  # longer than 2:1: the longest bucket, cut
    images = [Image.new("RGB", (400, 300)), Image.new("RGB", (300, 300))]
    assert picture_sizes(images, 64, 16, bucket=False) == [(64, 64), (64, 64)]
    assert picture_sizes(images, 64, 16, bucket=True) == [(80, 48), (64, 64)]


def phone_photos(folder, sizes=((96, 72), (60, 80), (64, 64), (112, 63))):
    """Pictures of mixed sizes (4:3, 3:4, square, 16:9); the square one with an alpha channel as its mask."""
    folder.mkdir()
    for index, (width, height) in enumerate(sizes):
        image = Image.new("RGBA", (width, height), (200, 120, 30 * index, 255))
        ImageDraw.Draw(image).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(20, 40, 230, 255))
        if (width, height) == (64, 64):
            alpha = Image.new("L", (width, height), 0)
            ImageDraw.Draw(alpha).rectangle((0, 0, 31, 63), fill=255)  # the left half
            image.putalpha(alpha)
        image.save(folder / f"{index}.png")
    return folder


def test_masks_come_from_mask_files_or_alpha(tmp_path):
    folder = phone_photos(tmp_path / "photos")
    mask = Image.new("L", (96, 72), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 47, 71), fill=255)
    mask.save(folder / "0.mask.png")
    data = read_training_data(folder, "<t>", "object")
    assert [p.name for p in data.image_paths] == ["0.png", "1.png", "2.png", "3.png"]  # the mask is not a picture
    assert [m is not None for m in data.masks] == [True, False, True, False]
    assert data.masks[0].getpixel((10, 10)) == 255 and data.masks[0].getpixel((90, 10)) == 0
    assert data.masks[2].getpixel((0, 0)) == 255 and data.masks[2].getpixel((32, 32)) == 0  # from the alpha channel
    assert data.images[2].getpixel((63, 0)) == (255, 255, 255)  # and the picture is composited on white, as before

    Image.new("L", (50, 50)).save(folder / "0.mask.png")
    with pytest.raises(UserError, match=r"0\.mask\.png: mask is 50x50 but its picture 0\.png is 96x72"):
        read_training_data(folder, "<t>", "object")
    (folder / "0.mask.png").unlink()
    Image.new("L", (8, 8)).save(folder / "9.mask.png")
    with pytest.raises(UserError, match=r"mask 9\.mask\.png has no picture beside it"):
        read_training_data(folder, "<t>", "object")


def test_latents_per_bucket_with_masks_on_the_latent_grid(tiny_sd1_path, tmp_path):
    from textual_inversion.models import load_pipeline

    vae = load_pipeline(tiny_sd1_path).vae
    data = read_training_data(phone_photos(tmp_path / "photos"), "<t>", "object")
    sizes = picture_sizes(data.images, 32, 4, bucket=True)
    assert sizes == [(36, 28), (28, 36), (32, 32), (40, 24)]
    caches = encode_images(vae, data.images, sizes, "center", 1, True, 0, torch.device("cpu"), torch.float32, data.masks)
    assert [(c.target_size, tuple(c.means.shape)) for c in caches] == [
        ((36, 28), (2, 4, 18, 14)), ((32, 32), (2, 4, 16, 16)), ((28, 36), (2, 4, 14, 18)), ((24, 40), (2, 4, 12, 20))]
    square = caches[1]
    assert square.masks.shape == (2, 1, 16, 16)
    # the alpha's halves (the edge column soft: the mask is scaled like its picture, then averaged down)
    assert (square.masks[0, 0, :, :7] == 1).all() and (square.masks[0, 0, :, 9:] == 0).all()
    assert torch.equal(square.masks[1], square.masks[0].flip(-1))  # the flipped copy has a flipped mask
    assert (caches[0].masks == 1).all()  # a picture without a mask counts everywhere
    assert square.size_conditions(torch.tensor([0])) == [(64, 64, 0, 0, 32, 32)]  # original, crop, target
    assert caches[3].size_conditions(torch.tensor([0])) == [(63, 112, 0, 2, 24, 40)]  # 16:9 cut to the 5:3 bucket


def test_a_batch_comes_from_one_bucket_in_proportion_to_its_pictures():
    def cache(entries, height, width):
        return LatentCache(torch.zeros(entries, 4, height, width), torch.zeros(entries, 4, height, width),
                           list(range(entries)), [False] * entries, [(0, 0)] * entries, [(9, 9)] * entries,
                           (height * 8, width * 8))

    data = TrainingData([], [], [["p"]] * 6, [None] * 6, caches=[cache(3, 4, 6), cache(1, 5, 5)])
    generator = torch.Generator().manual_seed(0)
    shapes = [draw_batch(data, 2, None, generator, 1000, 1.0, 0, 1).latents.shape[-2:] for _ in range(400)]
    assert set(shapes) == {(4, 6), (5, 5)}
    assert 0.65 < shapes.count((4, 6)) / 400 < 0.85  # three entries of four


def test_the_masked_loss_ignores_the_background_at_weight_zero(tiny_sd1_path):
    """With weight 0 outside the mask, what the background pixels hold does not change the loss."""
    from diffusers import DDPMScheduler

    from textual_inversion.models import load_pipeline
    from textual_inversion.objective import diffusion_loss, encode_conditioning

    pipe = load_pipeline(tiny_sd1_path)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    generator = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 4, 16, 16, generator=generator), torch.randn(2, 4, 16, 16, generator=generator)
    timesteps = torch.tensor([10, 500])
    conditioning = encode_conditioning(pipe, ["a cat", "a dog"], [], torch.device("cpu"))
    plain = diffusion_loss(pipe.unet, scheduler, latents, noise, timesteps, conditioning)
    ones = diffusion_loss(pipe.unet, scheduler, latents, noise, timesteps, conditioning, torch.ones(2, 1, 16, 16))
    assert torch.allclose(plain, ones, rtol=1e-5)  # an all-white mask is no mask
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    masked = diffusion_loss(pipe.unet, scheduler, latents, noise, timesteps, conditioning, mask)
    target = torch.nn.functional.mse_loss(
        pipe.unet(scheduler.add_noise(latents, noise, timesteps), timesteps, **conditioning).sample, noise,
        reduction="none")[..., 4:12, 4:12].mean(dim=(1, 2, 3))
    assert torch.allclose(masked, target, rtol=1e-5)  # the mean over the subject's pixels alone


@pytest.mark.parametrize("method", ["textual-inversion", "lora"])
def test_mixed_size_photos_train_without_cropping_by_hand(train_config, tmp_path, method):
    """The issue's check: 4:3, 3:4, square with an alpha mask and 16:9 pictures train as they are, resumably."""
    from textual_inversion.training import train

    folder = phone_photos(tmp_path / "photos")
    options = {"init_token": "cat"} if method == "textual-inversion" else {}
    config = dataclasses.replace(train_config, images=str(folder), method=method, options=options, steps=6,
                                 checkpoint_every=3, output_dir=str(tmp_path / "straight"))
    if method == "lora":
        config = config.replaced(lr=1e-3, class_prompt="a photo of a cat", num_class_images=2)
    straight = train(config)
    assert straight.steps == 6 and all(path.exists() for path in straight.outputs.values())
    first = train(dataclasses.replace(config, steps=3, output_dir=str(tmp_path / "resumed")))
    assert first.steps == 3
    resumed = train(dataclasses.replace(config, output_dir=str(tmp_path / "resumed"), resume=True))
    assert [row[1] for row in resumed.loss_history] == [row[1] for row in straight.loss_history]


def test_sdxl_gets_each_pictures_true_size_conditioning(tiny_sdxl_path, tmp_path):
    from textual_inversion.models import load_pipeline
    from textual_inversion.objective import encode_conditioning

    pipe = load_pipeline(tiny_sdxl_path)
    conditioning = encode_conditioning(pipe, ["a cat", "a dog"], [(63, 112, 0, 2, 24, 40), (64, 64, 0, 0, 32, 32)],
                                       torch.device("cpu"))
    assert conditioning["added_cond_kwargs"]["time_ids"].tolist() == [[63, 112, 0, 2, 24, 40], [64, 64, 0, 0, 32, 32]]


def test_mask_weight_is_checked(train_config):
    with pytest.raises(UserError, match="--mask-weight 1.5: must be between 0"):
        dataclasses.replace(train_config, mask_weight=1.5).validate()
