"""Image folders: what is read, what is skipped, and how odd pictures are normalised."""

import numpy as np
import pytest
from PIL import Image

from textual_inversion.data import crop_and_resize, list_images, load_rgb, make_captions, read_caption
from textual_inversion.errors import UserError


def test_folder_listing_skips_non_images(tmp_path, caplog):
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "a.txt").write_text("a photo of {token}")
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]
    assert "skipped 1 non-image file(s): notes.md" in caplog.text


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(UserError, match="no images found"):
        list_images(tmp_path)
    with pytest.raises(UserError, match="no such folder"):
        list_images(tmp_path / "nope")


def test_odd_images_become_upright_rgb(tmp_path):
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    rgba.save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white

    Image.fromarray(np.full((40, 50), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_rgb(tmp_path / "deep.png").getpixel((0, 0)) == (255, 255, 255)

    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "print.jpg")
    assert load_rgb(tmp_path / "print.jpg").mode == "RGB"

    tall = Image.new("RGB", (40, 60), (0, 0, 0))
    exif = tall.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    tall.save(tmp_path / "phone.jpg", exif=exif)
    assert load_rgb(tmp_path / "phone.jpg").size == (60, 40)

    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserError, match="broken.png: cannot read this image"):
        load_rgb(tmp_path / "broken.png")
    Image.new("RGB", (10, 10)).save(tmp_path / "tiny.png")
    with pytest.raises(UserError, match="smaller than 32 px"):
        load_rgb(tmp_path / "tiny.png")


def test_crop_is_square_at_the_requested_place():
    image = Image.new("RGB", (100, 50))
    cropped, (top, left) = crop_and_resize(image, 32, (1.0, 0.5))
    assert cropped.size == (32, 32) and (top, left) == (0, 32)


def test_captions_use_the_txt_file_or_the_templates(tmp_path):
    (tmp_path / "a.txt").write_text("my {token} on a sofa")
    (tmp_path / "b.txt").write_text("no placeholder")
    captions = make_captions([tmp_path / "a.png", tmp_path / "c.png"], "<t>", "style")
    assert captions[0] == ["my <t> on a sofa"]
    assert all("<t>" in c for c in captions[1]) and "a painting in the style of <t>" in captions[1]
    with pytest.raises(UserError, match=r"b.txt: caption has no \{token\}"):
        make_captions([tmp_path / "b.png"], "<t>", "object")


def test_caption_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    (tmp_path / "a.txt").write_bytes("ma {token} préférée".encode("cp1252"))  # Windows Notepad, older
    with pytest.raises(UserError, match=r"a.txt: caption is not UTF-8 text \(byte 0xe9 at offset 13\); save it as UTF-8"):
        read_caption(tmp_path / "a.png", "<t>")
    (tmp_path / "b.txt").write_bytes("\ufeffma {token} préférée".encode())  # UTF-8 with a byte-order mark
    assert read_caption(tmp_path / "b.png", "<t>") == "ma <t> préférée"


def test_grey_palette_and_huge_pictures(tmp_path):
    Image.new("L", (40, 40), 128).save(tmp_path / "grey.png")
    assert load_rgb(tmp_path / "grey.png").getpixel((0, 0)) == (128, 128, 128)
    palette = Image.new("P", (40, 40), 3)
    palette.putpalette([0, 0, 0, 10, 10, 10, 20, 20, 20, 200, 100, 50] + [0] * 756)
    palette.save(tmp_path / "palette.png")
    assert load_rgb(tmp_path / "palette.png").getpixel((0, 0)) == (200, 100, 50)
    Image.new("RGB", (4000, 3000), (1, 2, 3)).save(tmp_path / "phone.jpg", quality=50)
    big = load_rgb(tmp_path / "phone.jpg")
    assert max(big.size) <= 2048 and big.size[0] > big.size[1]


def test_cached_latents_are_contiguous(tiny_sd1_path):
    """Cached latents are contiguous: with channels-last ones step_overhead.py measured the CPU step 16-20 % over its floor."""
    import torch

    from textual_inversion.data import encode_images
    from textual_inversion.models import load_pipeline

    vae = load_pipeline(tiny_sd1_path).vae
    images = [Image.new("RGB", (40, 32), (200, 30 * i, 10)) for i in range(3)]
    [cache] = encode_images(vae, images, 32, "center", 1, True, 0, torch.device("cpu"), torch.float32)
    assert cache.means.is_contiguous() and cache.stds.is_contiguous()
    assert cache.sample(torch.tensor([0, 5]), torch.Generator().manual_seed(0), 0.18).is_contiguous()


def test_pictures_are_encoded_a_few_at_a_time_by_area_with_the_same_latents(tiny_sd1_path, monkeypatch):
    import torch

    import textual_inversion.data as data
    from textual_inversion.models import load_pipeline

    vae = load_pipeline(tiny_sd1_path).vae
    batches = []
    encode = vae.encode
    monkeypatch.setattr(vae, "encode", lambda pixels: batches.append(len(pixels)) or encode(pixels))
    images = [Image.new("RGB", (40, 32), (200, 30 * i, 10)) for i in range(5)]

    def latents():
        batches.clear()
        [cache] = data.encode_images(vae, images, 32, "center", 1, False, 0, torch.device("cpu"), torch.float32)
        return cache.means, list(batches)

    together, sizes = latents()
    assert sizes == [5]  # small pictures: up to eight at once
    monkeypatch.setattr(data, "ENCODE_PIXELS", 2 * 32 * 32)
    apart, sizes = latents()
    assert sizes == [2, 2, 1]
    assert torch.allclose(together, apart, atol=1e-5)


def test_refined_latents_decode_nearer_the_pictures_and_keep_the_encoders_spread(tiny_sd1_path):
    """--refine-latents: decoder inversion moves each cached mean until the decoder redraws the picture better."""
    import torch
    import torch.nn.functional as F

    from textual_inversion.data import encode_images
    from textual_inversion.images import to_tensor
    from textual_inversion.models import load_pipeline

    vae = load_pipeline(tiny_sd1_path).vae
    images = [Image.new("RGB", (32, 32), (200, 30 * i, 10)) for i in range(2)]
    images[0].paste((20, 20, 240), (8, 8, 14, 14))  # a small detail

    def cache(refine_steps):
        [cached] = encode_images(vae, images, 32, "center", 1, False, 0, torch.device("cpu"), torch.float32,
                                 refine_steps=refine_steps)
        return cached

    plain, refined = cache(0), cache(20)
    with torch.no_grad():
        errors = [F.mse_loss(vae.decode(c.means).sample, to_tensor(images)).item() for c in (plain, refined)]
    assert errors[1] < errors[0]
    assert torch.equal(refined.stds, plain.stds)
    assert all(parameter.grad is None for parameter in vae.parameters())


def cache_of(entries: int, side: int = 4):
    """A latent cache of `entries` zero latents [entries, 4, side, side], one picture each."""
    import torch

    from textual_inversion.data import LatentCache

    zeros = torch.zeros(entries, 4, side, side)
    return LatentCache(zeros, zeros, list(range(entries)), [False] * entries, [(0, 0)] * entries,
                       [(side * 8, side * 8)] * entries, (side * 8, side * 8))


def test_stratified_timesteps_take_one_from_each_range_of_the_schedule():
    import torch

    from textual_inversion.data import draw_timesteps

    generator = torch.Generator().manual_seed(0)
    draws = [draw_timesteps(4, 1000, generator) for _ in range(200)]
    for timesteps in draws:
        assert sorted(int(t) // 250 for t in timesteps) == [0, 1, 2, 3]
    assert len({tuple(t.tolist()) for t in draws}) == 200  # random within the ranges, and in random order
    assert {int(t[0]) // 250 for t in draws} == {0, 1, 2, 3}
    everything = torch.cat(draws)
    assert everything.min() >= 0 and everything.max() <= 999
    assert len(draw_timesteps(3, 1000, generator)) == 3 and draw_timesteps(1, 10, generator).item() in range(10)


def test_a_stratified_batch_covers_the_schedule_for_the_subject_and_for_the_class_images():
    import torch

    from textual_inversion.data import TrainingData, draw_batch

    data = TrainingData([], [], [["p"]] * 3, [None] * 3, caches=[cache_of(3)], class_caches=[cache_of(5)])
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        batch = draw_batch(data, 4, "a dog", generator, 1000, 1.0, 0, 1, stratified=True)
        subject, class_rows = batch.timesteps[:4], batch.timesteps[4:]
        assert sorted(int(t) // 250 for t in subject) == sorted(int(t) // 250 for t in class_rows) == [0, 1, 2, 3]
    # Two processes each train on half the rows of the same global batch: together, every range once.
    halves = [draw_batch(data, 4, "a dog", torch.Generator().manual_seed(7), 1000, 1.0, process, 2, stratified=True)
              for process in (0, 1)]
    assert sorted(int(t) // 250 for half in halves for t in half.timesteps[:2]) == [0, 1, 2, 3]


def test_uniform_timesteps_are_drawn_as_before_the_stratified_option():
    """Runs from before --timesteps draw the same batches: the seed-0 draws, recorded then."""
    import torch

    from textual_inversion.data import TrainingData, draw_batch

    data = TrainingData([], [], [["p"]] * 3, [None] * 3, caches=[cache_of(3)])
    generator = torch.Generator().manual_seed(0)
    assert [draw_batch(data, 4, None, generator, 1000, 1.0, 0, 1).timesteps.tolist() for _ in range(2)] == RECORDED


def test_timestep_bias_favours_its_span_by_the_multiplier():
    import torch

    from textual_inversion.data import timestep_bias

    later = timestep_bias(1000, "later", 0.1, 9.0)
    assert later.sum().item() == pytest.approx(1.0)
    assert later[900:].sum().item() == pytest.approx(0.5)  # 100 timesteps x 9 against 900 x 1
    assert later[899].item() * 9 == pytest.approx(later[900].item())
    earlier = timestep_bias(1000, "earlier", 0.25, 0.5)  # below 1: the cleanest quarter avoided
    assert earlier[:250].sum().item() == pytest.approx(250 * 0.5 / (250 * 0.5 + 750))
    in_range = timestep_bias(1000, "range", 0.5, 4.0, begin=200, end=300)
    assert torch.equal(in_range > in_range.min(), torch.arange(1000).ge(200) & torch.arange(1000).lt(300))


def test_biased_timesteps_follow_their_chances_and_a_stratified_batch_splits_them_exactly():
    import torch

    from textual_inversion.data import draw_biased_timesteps, timestep_bias

    chances = timestep_bias(1000, "later", 0.1, 9.0)  # half of the chance on t >= 900
    generator = torch.Generator().manual_seed(0)
    drawn = torch.cat([draw_biased_timesteps(4, chances, generator) for _ in range(2000)])
    assert drawn.min() >= 0 and drawn.max() <= 999
    assert 0.47 < (drawn >= 900).double().mean().item() < 0.53  # 8000 draws: 3 standard deviations is 0.017
    assert len(set(drawn[drawn < 900].tolist())) > 800  # the rest still spread over the whole schedule
    for _ in range(100):  # one draw from each quarter of the chance: exactly two noisiest-tenth timesteps
        assert int((draw_biased_timesteps(4, chances, generator, stratified=True) >= 900).sum()) == 2


def test_a_biased_batch_draws_its_subject_and_class_rows_with_the_chances():
    import torch

    from textual_inversion.data import TrainingData, draw_batch, timestep_bias

    data = TrainingData([], [], [["p"]] * 3, [None] * 3, caches=[cache_of(3)], class_caches=[cache_of(5)])
    only_the_last = timestep_bias(1000, "later", 0.001, 1e12)  # every chance but a rounding error on t = 999
    batch = draw_batch(data, 4, "a dog", torch.Generator().manual_seed(0), 1000, 1.0, 0, 1,
                       timestep_chances=only_the_last)
    assert batch.timesteps.tolist() == [999] * 8


def test_antithetic_noise_draws_each_picture_twice_with_the_noise_negated():
    """--noise-sampling antithetic: half the rows drawn, each again with the same latents, caption and timestep and
    the negated noise; the subject's rows first, then the class images', as without it."""
    import torch

    from textual_inversion.data import LatentCache, TrainingData, draw_batch

    def distinct_cache(entries: int, offset: float) -> LatentCache:
        means = torch.arange(entries, dtype=torch.float32).view(-1, 1, 1, 1).expand(entries, 4, 4, 4) + offset
        return LatentCache(means.clone(), torch.zeros_like(means), list(range(entries)), [False] * entries,
                           [(0, 0)] * entries, [(32, 32)] * entries, (32, 32))

    data = TrainingData([], [], [[f"picture {i}"] for i in range(3)], [None] * 3, caches=[distinct_cache(3, 0.0)],
                        class_caches=[distinct_cache(5, 100.0)])
    for seed in range(20):
        batch = draw_batch(data, 4, "a dog", torch.Generator().manual_seed(seed), 1000, 1.0, 0, 1, stratified=True,
                           antithetic=True)
        assert batch.subject_count == 4 and len(batch.latents) == 8
        for first in (0, 4):  # the subject's rows, then the class images'
            pair, copy = slice(first, first + 2), slice(first + 2, first + 4)
            assert torch.equal(batch.latents[pair], batch.latents[copy])
            assert torch.equal(batch.noise[copy], -batch.noise[pair]) and batch.noise[pair].abs().sum() > 0
            assert torch.equal(batch.timesteps[pair], batch.timesteps[copy])
            assert batch.prompts[pair] == batch.prompts[copy]
        assert (batch.latents[:4] < 100).all() and (batch.latents[4:] >= 100).all()
        assert sorted(int(t) // 500 for t in batch.timesteps[:2]) == [0, 1]  # stratified over the 2 drawn rows


RECORDED = [[722, 753, 212, 405], [453, 166, 446, 14]]  # from main at 36563c3, before the option
