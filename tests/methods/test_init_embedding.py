"""train --init-embedding: the new token's rows start from a file's vectors (Textual Inversion, pivotal tuning)."""

import pytest
import torch

from textual_inversion import TrainConfig, UserError, read_embedding, train
from textual_inversion.cli import main
from textual_inversion.formats import Embedding, write_embedding
from textual_inversion.methods.pivotal import PivotalTuning
from textual_inversion.methods.textual_inversion import TextualInversion
from textual_inversion.models import load_pipeline


def start_file(folder, vectors: dict[str, torch.Tensor], name: str = "start.pt", format: str = "a1111"):
    return str(write_embedding(Embedding("<start>", vectors), folder / name, format))


def config_for(model, image_folder, tmp_path, **options) -> TrainConfig:
    method = options.pop("method", "textual-inversion")
    return TrainConfig(model=model, images=str(image_folder), token="<blob>", method=method, options=options,
                       steps=1, lr=1e-4, device="cpu", output_dir=str(tmp_path / "run"))


def test_textual_inversion_rows_start_from_the_file(tiny_sd1_path, image_folder, tmp_path):
    vectors = torch.randn(3, 768)
    config = config_for(tiny_sd1_path, image_folder, tmp_path, init_embedding=start_file(tmp_path, {"text_encoder": vectors}))
    config.validate()  # no --init-token needed, and --vectors left at its default takes the file's 3
    method = TextualInversion(config)
    pipe = load_pipeline(tiny_sd1_path)
    method.prepare(pipe, None)
    assert torch.equal(method.rows["text_encoder"].detach(), vectors)
    ids = pipe.tokenizer.convert_tokens_to_ids(["<blob>", "<blob>_1", "<blob>_2"])
    assert torch.equal(pipe.text_encoder.get_input_embeddings()(torch.tensor(ids)).detach(), vectors)
    assert method.metadata()["vectors"] == "3" and method.metadata()["init_embedding"].endswith("start.pt")


def test_pivotal_tuning_starts_its_embeddings_from_the_file_too(tiny_sd1_path, image_folder, tmp_path):
    vectors = torch.randn(2, 768)
    path = start_file(tmp_path, {"text_encoder": vectors}, "start.safetensors", "kohya")
    config = config_for(tiny_sd1_path, image_folder, tmp_path, method="pivotal", init_embedding=path, vectors=2, rank=2)
    config.validate()  # --vectors equal to the file's count is fine
    method = PivotalTuning(config)
    method.prepare(load_pipeline(tiny_sd1_path), None)
    assert torch.equal(method.embeddings.rows["text_encoder"].detach(), vectors)


def test_sdxl_starts_each_encoder_from_its_own_vectors(tiny_sdxl_path, image_folder, tmp_path):
    vectors = {"clip_l": torch.randn(2, 768), "clip_g": torch.randn(2, 1280)}
    path = start_file(tmp_path, vectors, "start.safetensors", "diffusers")
    method = TextualInversion(config_for(tiny_sdxl_path, image_folder, tmp_path, init_embedding=path))
    method.prepare(load_pipeline(tiny_sdxl_path), None)
    assert all(torch.equal(method.rows[name].detach(), vectors[name]) for name in vectors)


def test_a_one_step_run_records_the_file(tiny_sd1_path, image_folder, tmp_path):
    vectors = torch.randn(2, 768)
    path = start_file(tmp_path, {"text_encoder": vectors})
    result = train(config_for(tiny_sd1_path, image_folder, tmp_path, init_embedding=path))
    learned = read_embedding(result.embedding_path)
    assert learned.metadata["init_embedding"] == path and learned.metadata["vectors"] == "2"
    assert learned.num_vectors == 2
    assert (learned.vectors["text_encoder"] - vectors).abs().max() < 1e-2  # one step at lr 1e-4 moves little


@pytest.mark.parametrize("options,message", [
    ({"init_token": "cat"}, "both say where the vectors start"),
    ({"vectors": 4}, "--vectors 4: --init-embedding .*start.pt holds 3 vector"),
    ({"init_strategy": "cross"}, "--init-strategy cross"),
])
def test_options_that_contradict_the_file(tiny_sd1_path, image_folder, tmp_path, options, message):
    path = start_file(tmp_path, {"text_encoder": torch.randn(3, 768)})
    with pytest.raises(UserError, match=message):
        config_for(tiny_sd1_path, image_folder, tmp_path, init_embedding=path, **options).validate()
    with pytest.raises(UserError, match="--init-embedding .*missing.pt: no such embedding file"):
        config_for(tiny_sd1_path, image_folder, tmp_path, init_embedding=str(tmp_path / "missing.pt")).validate()


def test_a_file_of_another_width_is_one_line_naming_it(tiny_sd1_path, image_folder, tmp_path, capsys):
    path = start_file(tmp_path, {"text_encoder": torch.randn(1, 1024)}, "sd2.safetensors", "kohya")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--model", tiny_sd1_path, "--images", str(image_folder), "--token", "<blob>",
              "--init-embedding", path, "--steps", "1", "--output-dir", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--init-embedding" in err and "sd2.safetensors" in err and "1024" in err and "768" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
