"""--token-gradient: the token learns through some of the UNet's cross-attention layers; the forward pass is the same."""

import shutil

import pytest
import torch

from textual_inversion import TrainConfig, UserError, train
from textual_inversion.extended_conditioning import cross_attention_layers
from textual_inversion.methods.textual_inversion import TextualInversion, stop_token_gradient
from textual_inversion.models import load_pipeline


def conditioning_gradient(unet, conditioning: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the UNet's output, the gradient of its mean square with respect to `conditioning`)."""
    generator = torch.Generator().manual_seed(0)
    side = unet.config.sample_size
    latents = torch.randn(2, unet.config.in_channels, side, side, generator=generator)
    text = conditioning.detach().requires_grad_(True)
    output = unet(latents, torch.tensor([10, 500]), text).sample
    output.square().mean().backward()
    return output.detach(), text.grad


@pytest.mark.parametrize("layers", ["up", "finest"])
def test_the_gradient_comes_back_through_the_chosen_layers_only(tiny_sd1_path, layers):
    unet = load_pipeline(tiny_sd1_path).unet.requires_grad_(False)
    attention = cross_attention_layers(unet)
    up = sorted({name.split(".")[1] for name in attention if name.startswith("up_blocks.")}, key=int)
    kept = [name for name in attention if name.startswith("up_blocks." if layers == "up" else f"up_blocks.{up[-1]}.")]
    assert 0 < len(kept) < len(attention)
    conditioning = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    output, full = conditioning_gradient(unet, conditioning)

    hooks = stop_token_gradient(unet, layers)
    assert len(hooks) == len(attention) - len(kept)
    stopped_output, stopped = conditioning_gradient(unet, conditioning)
    for hook in hooks:
        hook.remove()
    expected = expected_share(unet, conditioning, kept)  # the kept layers' share of the full gradient

    assert torch.equal(output, stopped_output)
    assert stopped.abs().sum() > 0 and not torch.allclose(stopped, full)
    torch.testing.assert_close(stopped, expected)
    assert torch.equal(conditioning_gradient(unet, conditioning)[1], full)  # hooks removed: as before


def expected_share(unet, conditioning: torch.Tensor, kept: list[str]) -> torch.Tensor:
    """The gradient reaching `conditioning` through the layers `kept`, each given its own leaf copy of it."""
    generator = torch.Generator().manual_seed(0)
    side = unet.config.sample_size
    latents = torch.randn(2, unet.config.in_channels, side, side, generator=generator)
    copies = {name: conditioning.clone().requires_grad_(True) for name in kept}
    handles = [unet.get_submodule(name).register_forward_pre_hook(
        lambda module, args, kwargs, leaf=leaf: (args, {**kwargs, "encoder_hidden_states": leaf}), with_kwargs=True)
        for name, leaf in copies.items()]
    unet(latents, torch.tensor([10, 500]), conditioning).sample.square().mean().backward()
    for handle in handles:
        handle.remove()
    return sum(leaf.grad for leaf in copies.values())


def test_training_with_a_stopped_gradient_learns_and_leaves_no_hooks(tiny_sd1_path, image_folder, tmp_path):
    pipe = load_pipeline(tiny_sd1_path)
    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", steps=3, batch_size=2,
                         checkpoint_every=0, device="cpu", output_dir=str(tmp_path / "run"),
                         options={"init_token": "cat", "token_gradient": "finest"})
    result = train(config, pipe=pipe)

    assert result.embedding_path.exists() and result.steps == 3
    assert not any(module._forward_pre_hooks for module in pipe.unet.modules())


def test_with_a_fraction_the_later_steps_learn_through_every_layer(tiny_sd1_path, image_folder, tmp_path,
                                                                  monkeypatch):
    pipe = load_pipeline(tiny_sd1_path)
    hooked = []  # per step: whether any cross-attention layer detaches the text
    layers = [pipe.unet.get_submodule(name) for name in cross_attention_layers(pipe.unet)]
    original = TextualInversion.step_started

    def record(method, step):
        original(method, step)
        hooked.append(any(layer._forward_pre_hooks for layer in layers))

    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", steps=4, batch_size=2,
                         checkpoint_every=0, device="cpu", output_dir=str(tmp_path / "run"),
                         options={"init_token": "cat", "token_gradient": "finest", "token_gradient_fraction": 0.5})
    monkeypatch.setattr(TextualInversion, "step_started", record)
    train(config, pipe=pipe)

    assert hooked == [True, True, False, False]
    assert not any(module._forward_pre_hooks for module in pipe.unet.modules())


def test_a_run_resumed_past_the_fraction_learns_through_every_layer(tiny_sd1_path, image_folder, tmp_path,
                                                                    monkeypatch):
    pipe = load_pipeline(tiny_sd1_path)
    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", steps=4, batch_size=2,
                         checkpoint_every=2, device="cpu", output_dir=str(tmp_path / "straight"),
                         options={"init_token": "cat", "token_gradient": "finest", "token_gradient_fraction": 0.5})
    straight = train(config, pipe=load_pipeline(tiny_sd1_path))
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step-000002",
                    tmp_path / "resumed" / "checkpoints" / "step-000002")
    layers = [pipe.unet.get_submodule(name) for name in cross_attention_layers(pipe.unet)]
    hooked = []
    original = TextualInversion.step_started

    def record(method, step):
        original(method, step)
        hooked.append((step, any(layer._forward_pre_hooks for layer in layers)))

    monkeypatch.setattr(TextualInversion, "step_started", record)
    resumed = train(config.replaced(output_dir=str(tmp_path / "resumed"), resume=True), pipe=pipe)

    assert hooked == [(2, False), (3, False)]
    assert resumed.loss_history == straight.loss_history


@pytest.mark.parametrize(("method", "options", "message"), [
    ("pivotal", {"token_gradient": "up"}, "--token-gradient up is an option of --method textual-inversion"),
    ("textual-inversion", {"token_gradient": "finest", "per_layer": True}, "with --per-layer the other layers"),
    ("textual-inversion", {"token_gradient_fraction": 0.5}, "applies to --token-gradient up or finest"),
    ("textual-inversion", {"token_gradient": "up", "token_gradient_fraction": 0}, "must be above 0 and at most 1"),
])
def test_token_gradient_is_refused_where_it_cannot_work(method, options, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(images="x", token="<t>", method=method, options={"init_token": "cat", **options}).validate()
