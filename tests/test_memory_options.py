"""Memory options of the transformer families: --quantize-transformer (the frozen transformer of a Flux/SD3/Z-Image
model loaded quantised: fp8 by optimum-quanto, on the CPU here; nf4 needs CUDA) and --gradient-checkpointing."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from textual_inversion import TrainConfig
from textual_inversion.errors import UserError
from textual_inversion.models import load_pipeline
from textual_inversion.training import train


@pytest.mark.parametrize("family_path", ["tiny_flux_path", "tiny_sd3_path", "tiny_z_image_path"])
def test_gradient_checkpointing_keeps_the_result(family_path, request, image_folder, tmp_path):
    """Recomputing the transformer's and the text encoders' activations changes how, not what."""
    config = TrainConfig(model=request.getfixturevalue(family_path), images=str(image_folder), token="<blob>",
                         options={"init_token": "cat"}, steps=3, batch_size=2, resolution=32, lr=0.05,
                         checkpoint_every=0, output_dir=str(tmp_path / "plain"))
    plain = train(config)
    lean = train(dataclasses.replace(config, gradient_checkpointing=True, output_dir=str(tmp_path / "lean")))
    for (_, a, _), (_, b, _) in zip(plain.loss_history, lean.loss_history, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    for key, vectors in load_file(plain.embedding_path).items():
        assert torch.allclose(vectors, load_file(lean.embedding_path)[key], atol=1e-3 * config.lr), key


# bf16 as the README's Flux command runs it: the quantised transformer moves, but is not cast.
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_fp8_transformer_trains_textual_inversion_and_lora(precision, tiny_flux_path, image_folder, tmp_path):
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.nn import QLinear

    pipe = load_pipeline(tiny_flux_path, quantize="fp8")
    assert isinstance(pipe.transformer.transformer_blocks[0].attn.to_q, QLinear)
    quantized = {name: tensor.clone() for name, tensor in pipe.transformer.state_dict().items()}
    result = train(TrainConfig(model=tiny_flux_path, images=str(image_folder), token="<blob>", method="pivotal",
                               options={"init_token": "cat"}, steps=3, batch_size=2, resolution=32, lr=0.05,
                               quantize_transformer="fp8", mixed_precision=precision, device="cpu",
                               output_dir=str(tmp_path / "run")), pipe=pipe)
    for name, tensor in pipe.transformer.state_dict().items():  # the quantised weights never change
        if name in quantized:
            assert torch.equal(tensor, quantized[name]), name
    vectors = load_file(result.embedding_path)
    assert set(vectors) == {"clip_l", "t5"} and all(torch.isfinite(v).all() for v in vectors.values())
    # The LoRA learned around fp8 weights loads into the model at full precision, as it would be used.
    plain = load_pipeline(tiny_flux_path)
    plain.load_lora_weights(str(tmp_path / "run"))
    assert any("lora" in name for name, _ in plain.transformer.named_parameters())


def test_quantizing_is_refused_where_it_cannot_work(tiny_sd1_path, tiny_flux_path):
    with pytest.raises(UserError, match="for Flux, SD3 and Z-Image models"):
        load_pipeline(tiny_sd1_path, quantize="fp8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA GPU only"):
            load_pipeline(tiny_flux_path, quantize="nf4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_nf4_transformer_trains_pivotal_tuning_on_a_gpu(tiny_flux_path, image_folder, tmp_path):
    pytest.importorskip("bitsandbytes")
    result = train(TrainConfig(model=tiny_flux_path, images=str(image_folder), token="<blob>", method="pivotal",
                               options={"init_token": "cat"}, steps=3, batch_size=2, resolution=32, lr=0.05,
                               mixed_precision="bf16", quantize_transformer="nf4", output_dir=str(tmp_path / "run")))
    assert all(torch.isfinite(v).all() for v in load_file(result.embedding_path).values())
