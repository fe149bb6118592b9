"""The LiDB layer alone: rank 1, only the train matrices learn, aux matrices come back from the seed."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from textual_inversion import TrainConfig, train
from textual_inversion.errors import UserError
from textual_inversion.methods.lidb_file import read_lidb
from textual_inversion.methods.lidb_layers import (
    LiDBLinear,
    attach,
    aux_matrices,
    canonical_factors,
    detach,
    target_layers,
    token_readers,
    token_states,
)
from textual_inversion.models import load_pipeline


def test_delta_is_rank_one_and_only_train_matrices_get_gradients():
    torch.manual_seed(0)
    base = torch.nn.Linear(40, 30).requires_grad_(False)  # the loop freezes the model
    unet = torch.nn.Module()
    unet.attn1 = torch.nn.Module()
    unet.attn1.to_q = base
    shapes = target_layers(unet, down_dim=100, up_dim=50)
    assert [(s.down_dim, s.up_dim) for s in shapes] == [(40, 30)]  # clamped to the layer's widths
    layer = attach(unet, shapes, seed=3)["attn1.to_q"]
    with torch.no_grad():
        layer.up_train.normal_()
    x = torch.randn(5, 40)
    assert torch.allclose(layer(x), base(x) + x @ layer.delta_weight().T, atol=1e-5)
    assert torch.linalg.matrix_rank(layer.delta_weight()).item() == 1
    layer(x).square().sum().backward()
    assert layer.down_train.grad is not None and layer.up_train.grad is not None
    assert base.weight.grad is None and base.bias.grad is None
    assert not layer.down_aux.requires_grad and not layer.up_aux.requires_grad
    assert {n for n, _ in layer.named_parameters() if not n.startswith("base.")} == {"down_train", "up_train"}
    detach(unet, {"attn1.to_q": layer})
    assert unet.attn1.to_q is base


def test_aux_matrices_regenerate_identically_from_the_seed_and_are_orthonormal():
    shape = target_layers(_one_layer(64, 48), 20, 10)[0]
    down, up = aux_matrices(shape, seed=7, index=2)
    again_down, again_up = aux_matrices(shape, seed=7, index=2)
    assert torch.equal(down, again_down) and torch.equal(up, again_up)
    assert not torch.equal(down, aux_matrices(shape, seed=8, index=2)[0])
    assert torch.allclose(down @ down.T, torch.eye(20), atol=1e-5)  # orthonormal rows (20 x 64)
    assert torch.allclose(up.T @ up, torch.eye(10), atol=1e-5)  # orthonormal columns (48 x 10)


def test_lidb_run_writes_train_matrices_and_seed_and_a_rank_one_lora_diffusers_loads(tiny_sd1_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", method="lidb", steps=3, lr=0.05,
                         batch_size=2, checkpoint_every=0, device="cpu", seed=5, output_dir=str(tmp_path / "run"))
    pipe = load_pipeline(tiny_sd1_path)
    result = train(config, pipe=pipe)
    assert {kind: p.name for kind, p in result.outputs.items()} == {
        "lidb": "lidb_weights.safetensors", "lora": "pytorch_lora_weights.safetensors"}
    trained, metadata = read_lidb(result.outputs["lidb"])
    assert metadata["seed"] == "5" and metadata["down_dim"] == "100" and metadata["up_dim"] == "50"
    shapes = target_layers(load_pipeline(tiny_sd1_path).unet, 100, 50)
    assert set(trained) == {s.name for s in shapes}
    # Only the train matrices are stored: the file is small.
    assert result.outputs["lidb"].stat().st_size < 4 * sum(s.down_dim + s.up_dim for s in shapes) + 20_000
    # The rank-1 LoRA file is the same update: diffusers' loader reproduces the LiDB pipeline's output.
    lora = load_file(result.outputs["lora"])
    assert all(v.shape[0] == 1 for k, v in lora.items() if "lora.down" in k or "lora_A" in k)
    loaded = load_pipeline(tiny_sd1_path)
    loaded.load_lora_weights(str(result.output_dir))
    sample = dict(sample=torch.randn(1, 4, 16, 16), timestep=torch.tensor([10]), encoder_hidden_states=torch.randn(1, 5, 768))
    with torch.no_grad():
        layer = next(m for m in pipe.unet.modules() if isinstance(m, LiDBLinear))
        assert layer.up_train.abs().sum() > 0  # it learned something
        assert torch.allclose(pipe.unet(**sample).sample, loaded.unet(**sample).sample, atol=1e-4)
    resumed = dataclasses.replace(config, steps=4, resume=True)
    assert train(resumed).steps == 4


def test_cross_kv_selects_only_the_cross_attention_keys_and_values(tiny_sd1_path):
    unet = load_pipeline(tiny_sd1_path).unet
    every, cross = target_layers(unet, 100, 50), target_layers(unet, 100, 50, "cross-kv")
    assert cross and {s.name for s in cross} < {s.name for s in every}
    assert all(".attn2." in s.name and s.name.endswith((".to_k", ".to_v")) for s in cross)
    assert {s.in_features for s in cross} == {unet.config.cross_attention_dim}  # they read the prompt


def test_canonical_factors_keep_each_update_and_agree_on_sign_and_scale():
    torch.manual_seed(0)
    direction = torch.randn(20)
    fits = [{"attn2.to_k": (sign * scale * (direction + 0.1 * torch.randn(20)), torch.randn(10))}
            for sign, scale in ((1, 1.0), (-1, 3.0), (1, 0.2), (-1, 0.5))]
    canonical = canonical_factors(fits)
    for fit, same in zip(fits, canonical, strict=True):
        (down, up), (new_down, new_up) = fit["attn2.to_k"], same["attn2.to_k"]
        assert torch.allclose(torch.outer(up, down), torch.outer(new_up, new_down), atol=1e-5)  # the same ΔW
        assert torch.isclose(new_down.norm(), torch.tensor(1.0))
    downs = torch.stack([same["attn2.to_k"][0] for same in canonical])
    assert (downs @ downs[0] > 0.9).all()  # one sign for all, though half the fits were flipped


def test_token_reader_responds_to_the_token_far_more_than_to_other_positions():
    torch.manual_seed(0)
    common, token_part = torch.randn(32) * 3, torch.randn(32)
    states = common + 0.3 * torch.randn(12, 10, 32)  # features that mostly share one component, as CLIP's do
    on_token = torch.zeros(12, 10, dtype=torch.bool)
    on_token[:, 4] = True
    states[on_token] += token_part
    shape = target_layers(_one_layer(32, 24), 20, 10, "cross-kv")[0]
    reader = token_readers(states, on_token, [shape], seed=1)[shape.name]
    down_aux, _ = aux_matrices(shape, seed=1, index=0)
    response = states @ down_aux.T @ reader
    assert torch.isclose(response[on_token].mean(), states[on_token].norm(dim=-1).mean(), rtol=1e-4)
    assert response[~on_token].abs().mean() < 0.2 * response[on_token].abs().mean()
    naive = down_aux @ states[on_token].mean(0)  # the token's plain direction fires everywhere
    plain = states @ down_aux.T @ naive
    assert plain[~on_token].abs().mean() > 0.5 * plain[on_token].abs().mean()


def test_lidb_down_token_keeps_the_reader_fixed_and_learns_only_up(tiny_sd1_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="sks", method="lidb", steps=2, lr=0.05,
                         batch_size=2, checkpoint_every=0, device="cpu", seed=5,
                         options={"lidb_layers": "cross-kv", "lidb_down": "token"}, output_dir=str(tmp_path / "run"))
    pipe = load_pipeline(tiny_sd1_path)
    result = train(config, pipe=pipe)
    trained, metadata = read_lidb(result.outputs["lidb"])
    assert metadata["lidb_down"] == "token" and metadata["lidb_layers"] == "cross-kv"
    layers = {name: m for name, m in pipe.unet.named_modules() if isinstance(m, LiDBLinear)}
    assert set(layers) == set(trained)
    for name, layer in layers.items():
        assert not layer.down_train.requires_grad and layer.down_train.norm() > 0
        assert torch.equal(trained[name][0], layer.down_train.detach())
        assert trained[name][1].abs().sum() > 0  # up learned
    fresh = load_pipeline(tiny_sd1_path)
    states, on_token = token_states(fresh, "sks", ["a photo of sks", "a rendering of a sks"])
    counts = on_token.sum(1)  # the token's pieces, found in every prompt, as many times in each
    assert states.shape[:2] == on_token.shape and counts.min() > 0 and (counts == counts[0]).all()
    with pytest.raises(UserError, match="--lidb-layers cross-kv"):
        dataclasses.replace(config, options=dataclasses.replace(config.options, lidb_layers="all")).validate()


def test_the_token_reader_reads_the_prompts_the_run_trains_on(tiny_sd1_path, image_folder, tmp_path, monkeypatch):
    import textual_inversion.methods.lidb_layers as lidb_layers

    for index, path in enumerate(sorted(image_folder.glob("*.png"))):  # caption files replace the templates
        path.with_suffix(".txt").write_text(f"a {{token}} on a {'red' if index % 2 else 'blue'} table")
    seen, real = [], lidb_layers.token_states
    monkeypatch.setattr(lidb_layers, "token_states", lambda pipe, token, prompts: seen.append(prompts) or
                        real(pipe, token, prompts))
    train(TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="sks", method="lidb", steps=1,
                      options={"lidb_layers": "cross-kv", "lidb_down": "token"}, device="cpu",
                      output_dir=str(tmp_path / "run")))
    assert seen == [["a sks on a blue table", "a sks on a red table"]]


def _one_layer(in_features, out_features):
    unet = torch.nn.Module()
    unet.attn2 = torch.nn.Module()
    unet.attn2.to_k = torch.nn.Linear(in_features, out_features)
    return unet
