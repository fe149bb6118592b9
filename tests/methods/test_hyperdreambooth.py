"""HyperDreamBooth end to end on a tiny model: predict -> fine-tune -> save -> load (ours and diffusers')."""

import torch
from PIL import Image

from tests.methods.test_hypernetwork import tiny_hypernetwork
from textual_inversion import GenerateConfig, TrainConfig, UserError, generate, train
from textual_inversion.methods.hypernetwork import load_hypernetwork, predicted_factors, save_hypernetwork
from textual_inversion.methods.lidb_layers import aux_matrices
from textual_inversion.models import load_pipeline


def predicted_deltas(pipe, images, hyper_dir) -> dict[str, torch.Tensor]:
    """ΔW per layer as the LiDB formula gives it, (up_aux · up)(down · down_aux), built whole for the check."""
    network = load_hypernetwork(hyper_dir)
    deltas = {}
    for index, (shape, (down, up)) in enumerate(zip(network.config.shapes(), network.predict(images), strict=True)):
        down_aux, up_aux = aux_matrices(shape, network.config.seed, index)
        deltas[shape.name] = torch.outer(up_aux @ up, down @ down_aux)
    factors, _ = predicted_factors(pipe, images, hyper_dir)
    assert factors.keys() == deltas.keys()
    for name, (lora_a, lora_b) in factors.items():
        assert torch.allclose(lora_b @ lora_a, deltas[name], atol=1e-6)
        assert torch.isclose(lora_a.norm(), lora_b.norm(), rtol=1e-4)
    return deltas


def test_predict_finetune_save_load(tiny_sd1_path, image_folder, tmp_path):
    hyper_dir = tmp_path / "hyper"
    save_hypernetwork(tiny_hypernetwork(load_pipeline(tiny_sd1_path).unet), hyper_dir)
    one = tmp_path / "one"
    one.mkdir()
    Image.open(next(image_folder.iterdir())).save(one / "one.png")
    config = TrainConfig(model=tiny_sd1_path, images=str(one), token="<blob>", method="hyperdreambooth", steps=2,
                         lr=1e-3, options={"rank": 4, "hypernetwork": str(hyper_dir)}, checkpoint_every=0, device="cpu",
                         output_dir=str(tmp_path / "run"))
    # Before any step the rank-4 LoRA equals the rank-1 prediction.
    zero_steps = train(TrainConfig(**{**vars(config), "lr": 1e-12, "steps": 1, "output_dir": str(tmp_path / "start")}))
    deltas = predicted_deltas(load_pipeline(tiny_sd1_path), [Image.open(one / "one.png").convert("RGB")], str(hyper_dir))
    started = load_pipeline(tiny_sd1_path)
    started.load_lora_weights(str(zero_steps.output_dir))
    layer = dict(started.unet.named_modules())[next(iter(deltas))]
    lora_delta = layer.lora_B["default_0"].weight @ layer.lora_A["default_0"].weight * layer.scaling["default_0"]
    assert torch.allclose(lora_delta, next(iter(deltas.values())), atol=1e-4)
    assert torch.count_nonzero(next(iter(deltas.values()))) > 0

    result = train(config)
    assert {kind: p.name for kind, p in result.outputs.items()} == {"lora": "pytorch_lora_weights.safetensors"}
    pipe = load_pipeline(tiny_sd1_path)
    pipe.load_lora_weights(str(result.output_dir))  # diffusers' own loader accepts the file
    paths = generate(GenerateConfig(model=tiny_sd1_path, concept=[str(result.output_dir)], prompt="a photo of <blob>",
                                    num_images=1, steps=2, device="cpu", output_dir=str(tmp_path / "generated")))
    assert len(paths) == 1 and paths[0].is_file()


def test_a_token_the_hypernetwork_was_not_trained_for_is_refused(tiny_sd1_path, image_folder, tmp_path):
    save_hypernetwork(tiny_hypernetwork(load_pipeline(tiny_sd1_path).unet, token="sks"), tmp_path / "hyper")
    config = TrainConfig(model=tiny_sd1_path, images=str(image_folder), token="<blob>", method="hyperdreambooth",
                         steps=1, options={"hypernetwork": str(tmp_path / "hyper")}, device="cpu",
                         output_dir=str(tmp_path / "run"))
    try:
        train(config)
    except UserError as error:
        assert "--token sks" in str(error)
    else:
        raise AssertionError("a wrong token was accepted")


def test_the_prediction_alone_is_a_rank_one_lora_file(tiny_sd1_path, tmp_path):
    from textual_inversion.methods.hypernetwork import write_prediction

    save_hypernetwork(tiny_hypernetwork(load_pipeline(tiny_sd1_path).unet), tmp_path / "hyper")
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    pipe = load_pipeline(tiny_sd1_path)
    path = write_prediction(pipe, [image], str(tmp_path / "hyper"), tmp_path)
    deltas = predicted_deltas(pipe, [image], str(tmp_path / "hyper"))
    pipe.load_lora_weights(str(path))
    name, delta = next(iter(deltas.items()))
    layer = dict(pipe.unet.named_modules())[name]
    assert layer.lora_A["default_0"].weight.shape[0] == 1
    assert torch.allclose(layer.lora_B["default_0"].weight @ layer.lora_A["default_0"].weight, delta, atol=1e-5)
