"""DreamBooth, LoRA and pivotal tuning on the shared loop, with tiny models: what learns, what loads."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import MIXED_PRECISION_RUNS
from textual_inversion import GenerateConfig, TrainConfig, UserError, generate, load_concepts, train
from textual_inversion.models import load_pipeline


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def unchanged(before: dict, module) -> bool:
    after = weights(module)
    return all(torch.equal(before[k], after[k]) for k in before)


@pytest.fixture
def method_config(tiny_sd1_path, image_folder, tmp_path):
    return TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", options={"init_token": "cat"},
                       steps=4, batch_size=2, checkpoint_every=2, device="cpu", output_dir=str(tmp_path / "run"))


def test_lora_changes_only_adapters_and_diffusers_loads_the_same_weights(method_config, tiny_sd1_path, tmp_path):
    pipe = load_pipeline(tiny_sd1_path)
    frozen = {name: weights(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    config = method_config.replaced(method="lora", lr=0.01, rank=2, lora_alpha=4.0, kohya_copy=True)
    result = train(config, pipe=pipe)
    assert [(kind, p.name) for kind, p in result.outputs.items()] == [
        ("lora", "pytorch_lora_weights.safetensors"), ("lora-kohya", "lora_kohya.safetensors")]
    base_unet = {k.replace(".base_layer", ""): v for k, v in weights(pipe.unet).items() if "lora" not in k}
    assert all(torch.equal(frozen["unet"][k], base_unet[k]) for k in frozen["unet"])
    assert unchanged(frozen["vae"], pipe.vae) and unchanged(frozen["text_encoder"], pipe.text_encoder)

    lora = load_file(result.outputs["lora"])
    assert lora and all(k.startswith("unet.") and "lora" in k for k in lora)
    ups = [v for k, v in lora.items() if "lora.up" in k]  # diffusers names B "up"
    assert ups and all(v.abs().sum() > 0 for v in ups), "the B matrices learned nothing"
    kohya = load_file(result.outputs["lora-kohya"])
    assert all(k.startswith("lora_unet_") for k in kohya) and any(k.endswith(".alpha") for k in kohya)

    prompt = dict(prompt="a photo of <blob>", num_inference_steps=2, generator=torch.Generator().manual_seed(0),
                  output_type="np")
    by_diffusers = load_pipeline(tiny_sd1_path)
    by_diffusers.load_lora_weights(str(result.output_dir))
    ours = load_pipeline(tiny_sd1_path)
    assert load_concepts(ours, [result.output_dir]) == ["<blob>"]  # the trigger word it was trained with
    plain = load_pipeline(tiny_sd1_path)
    theirs, mine = by_diffusers(**prompt).images, ours(**{**prompt, "generator": torch.Generator().manual_seed(0)}).images
    base = plain(**{**prompt, "generator": torch.Generator().manual_seed(0)}).images
    assert np.array_equal(theirs, mine)
    assert not np.array_equal(mine, base), "the LoRA changed nothing"
    kohya_pipe = load_pipeline(tiny_sd1_path)
    kohya_pipe.load_lora_weights(str(result.outputs["lora-kohya"]))
    from_kohya = kohya_pipe(**{**prompt, "generator": torch.Generator().manual_seed(0)}).images
    assert np.abs(from_kohya - mine).max() < 1e-4  # alpha is stored per layer there; same scale


def test_lora_layers_all_adapts_the_resnet_convolutions_and_every_file_loads_them(method_config, tiny_sd1_path):
    config = method_config.replaced(method="lora", lr=0.01, rank=2, lora_layers="all", kohya_copy=True)
    result = train(config, pipe=load_pipeline(tiny_sd1_path))
    lora = load_file(result.outputs["lora"])
    downs = {k: v for k, v in lora.items() if "lora_A" in k}  # peft's names, which diffusers' loader reads whole
    assert any(".resnets." in k and ".conv1." in k and v.dim() == 4 and v.shape[-1] == 3
               for k, v in downs.items()), "no 3x3 adapter on a ResNet convolution"
    assert any("ff.net.2" in k for k in downs) and any("proj_in" in k for k in downs)
    kohya = load_file(result.outputs["lora-kohya"])
    assert any("_resnets_" in k and k.endswith("conv1.lora_down.weight") for k in kohya)

    prompt = dict(prompt="a photo of <blob>", num_inference_steps=2, output_type="np")
    ours = load_pipeline(tiny_sd1_path)
    assert load_concepts(ours, [result.output_dir]) == ["<blob>"]
    mine = ours(**prompt, generator=torch.Generator().manual_seed(0)).images
    base = load_pipeline(tiny_sd1_path)(**prompt, generator=torch.Generator().manual_seed(0)).images
    assert not np.array_equal(mine, base), "the LoRA changed nothing"
    for source in (result.output_dir, result.outputs["lora-kohya"]):  # diffusers' loader, on both layouts
        pipe = load_pipeline(tiny_sd1_path)
        pipe.load_lora_weights(str(source))
        adapted = {name for name, module in pipe.unet.named_modules() if hasattr(module, "lora_A")}
        assert len(adapted) == len(downs), f"{source}: {len(adapted)} layers adapted of {len(downs)}"
        assert np.abs(pipe(**prompt, generator=torch.Generator().manual_seed(0)).images - mine).max() < 1e-4, source


def test_lora_on_sdxl_with_text_encoder_adapters(tiny_sdxl_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_sdxl_path, images=str(image_folder), token="<blob>", method="lora", steps=2,
                         lr=0.01, options={"lora_text_encoder": True}, device="cpu", output_dir=str(tmp_path / "run"))
    result = train(config)
    prefixes = {key.split(".")[0] for key in load_file(result.outputs["lora"])}
    assert prefixes == {"unet", "text_encoder", "text_encoder_2"}
    pipe = load_pipeline(tiny_sdxl_path)
    pipe.load_lora_weights(str(result.output_dir))
    assert {"default_0"} <= set(pipe.get_active_adapters())


def test_dreambooth_with_prior_preservation(method_config, tiny_sd1_path, tmp_path):
    pipe = load_pipeline(tiny_sd1_path)
    frozen = {name: weights(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    config = method_config.replaced(method="dreambooth", lr=1e-3, class_prompt="a photo of a cat",
                                 num_class_images=3, validation_steps=2)
    result = train(config, pipe=pipe)
    class_images = sorted((result.output_dir / "class_images").iterdir())
    assert [p.name for p in class_images] == ["0000.png", "0001.png", "0002.png"]
    assert not unchanged(frozen["unet"], pipe.unet)
    assert unchanged(frozen["vae"], pipe.vae) and unchanged(frozen["text_encoder"], pipe.text_encoder)

    saved = load_pipeline(str(result.outputs["pipeline"]))
    assert all(torch.equal(v, weights(pipe.unet)[k]) for k, v in weights(saved.unet).items())

    stamps = [p.stat().st_mtime_ns for p in class_images]
    train(dataclasses.replace(config, steps=6, resume=True), pipe=load_pipeline(tiny_sd1_path))
    assert [p.stat().st_mtime_ns for p in class_images] == stamps, "class images were made again"

    paths = generate(GenerateConfig(model="ignored", concept=[str(result.output_dir)], prompt="a photo of <blob>",
                                    num_images=1, steps=2, output_dir=str(tmp_path / "generated"), device="cpu"))
    assert paths[0].is_file()


def test_pivotal_stops_the_embeddings_after_the_ti_fraction(method_config, tiny_sd1_path, tmp_path):
    config = method_config.replaced(method="pivotal", lr=0.05, lora_lr=0.01, ti_fraction=0.5,
                                 checkpoint_every=1)
    result = train(config)
    assert {kind: p.name for kind, p in result.outputs.items()} == {
        "embedding": "learned_embeds.safetensors", "lora": "pytorch_lora_weights.safetensors"}
    step2 = load_file(result.output_dir / "checkpoints" / "step-000003" / "weights.safetensors")
    final = load_file(result.output_dir / "learned_embeds.safetensors")["<blob>"]
    assert torch.equal(step2["ti.text_encoder"], final), "embeddings kept learning after the pivot"

    pipe = load_pipeline(tiny_sd1_path)
    assert load_concepts(pipe, [result.output_dir]) == ["<blob>"]
    assert pipe.get_active_adapters()


@pytest.mark.parametrize("method", ["lora", "dreambooth", "pivotal"])
def test_resume_is_bit_identical_for_every_method(method, method_config, tmp_path, monkeypatch):
    import textual_inversion.training as training

    config = method_config.replaced(method=method, lr=0.01)
    straight = train(dataclasses.replace(config, output_dir=str(tmp_path / "straight")))
    real_save = training.save_checkpoint
    interrupts = []

    def save_then_interrupt(output_dir, step, *args, **kwargs):
        path = real_save(output_dir, step, *args, **kwargs)
        if step == 2 and not interrupts:
            interrupts.append(step)
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(training, "save_checkpoint", save_then_interrupt)
    with pytest.raises(UserError, match="interrupted at step 2"):
        train(config)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    resumed = train(dataclasses.replace(config, resume=True))
    a = training.load_checkpoint(training.latest_checkpoint(straight.output_dir))[0]
    b = training.load_checkpoint(training.latest_checkpoint(resumed.output_dir))[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("change", [{"rank": 4}, {"lora_layers": "all"}])
def test_resuming_lora_with_other_adapters_says_which_options(change, method_config):
    """A run begun at rank 2 on the attention, resumed with another rank or more layers (as one begun on miniworld
    before LoRA's defaults there changed, resumed without its options): one line, not peft's shape error."""
    config = method_config.replaced(method="lora", lr=0.01, rank=2, lora_layers="attention", steps=2)
    train(config)
    with pytest.raises(UserError, match=r"^--resume: the checkpoint's adapters are not the ones this run makes "
                                        r"\(another --rank, --lora-layers or --lora-text-encoder\); resume with"):
        train(config.replaced(**change, steps=4, resume=True))


def test_method_options_are_checked():
    with pytest.raises(UserError, match="--class-prompt .* --method dreambooth or lora"):
        TrainConfig(images="x", token="<t>", options={"init_token": "cat"}, class_prompt="a dog").validate()
    with pytest.raises(UserError, match="--train-text-encoder is an option of dreambooth, not of --method lora"):
        TrainConfig.from_values(dict(images="x", token="<t>", method="lora", train_text_encoder=True))
    TrainConfig(images="x", token="<t>", method="lora").validate()  # no --init-token needed


@pytest.mark.parametrize("method", ["lora", "dreambooth", "pivotal"])
@pytest.mark.parametrize(("device", "precision"), MIXED_PRECISION_RUNS)
def test_methods_in_mixed_precision(method, device, precision, method_config, tiny_sd1_path, tmp_path):
    config = method_config.replaced(method=method, lr=1e-3, mixed_precision=precision, device=device,
                                 class_prompt="a photo of a cat" if method == "dreambooth" else None,
                                 num_class_images=2, validation_steps=2)
    result = train(config)
    assert all(torch.isfinite(torch.tensor(row[1])) for row in result.loss_history)
    paths = generate(GenerateConfig(model=tiny_sd1_path, concept=[str(result.output_dir)], prompt="a photo of <blob>",
                                    num_images=1, steps=2, output_dir=str(tmp_path / "generated"), device=device))
    assert np.asarray(Image.open(paths[0])).std() > 0  # not a blank (NaN) image


def test_a_lora_run_combines_with_embeddings_from_other_runs(method_config, tiny_sd1_path, tmp_path):
    from textual_inversion.formats import Embedding, write_embedding

    lora_run = train(method_config.replaced(method="lora", lr=0.01, steps=2))
    other = write_embedding(Embedding("<other>", {"text_encoder": torch.randn(2, 768)}), tmp_path / "other.safetensors")
    paths = generate(GenerateConfig(model=tiny_sd1_path, concept=[str(lora_run.output_dir), str(other)],
                                    prompt="<blob> next to <other>", num_images=1, steps=2, device="cpu",
                                    output_dir=str(tmp_path / "generated")))
    assert "Concepts: run, other.safetensors" in Image.open(paths[0]).text["parameters"]
