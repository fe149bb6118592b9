"""Loading base models from every place users keep them, and naming their family."""

import json
import shutil

import pytest

from textual_inversion.errors import UserError
from textual_inversion.models import load_pipeline, model_family


def test_family_of_tiny_models(tiny_sd1_path, tiny_sdxl_path, tmp_path):
    from textual_inversion.tiny import build_tiny_pipeline

    assert model_family(load_pipeline(tiny_sd1_path)) == "sd1"
    assert model_family(load_pipeline(tiny_sdxl_path)) == "sdxl"
    assert model_family(build_tiny_pipeline("sd2", tmp_path / "sd2")) == "sd2"


def test_unknown_hub_id_offline_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="offline.*--model /path/to/folder"):
        load_pipeline("someone/some-model")


def test_broken_or_foreign_folders(tiny_sd1_path, tmp_path):
    with pytest.raises(UserError, match="no model_index.json"):
        load_pipeline(str(tmp_path))
    with pytest.raises(UserError, match="no such file or folder"):
        load_pipeline(str(tmp_path / "missing" / "model.safetensors"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd1_path, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(UserError, match="broken or incomplete"):
        load_pipeline(str(broken))
    other = tmp_path / "other"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(UserError, match="a KandinskyPipeline; this tool supports"):
        load_pipeline(str(other))


def test_single_file_checkpoint_loads_with_the_same_weights(tiny_sd1_path, tmp_path, monkeypatch):
    import torch

    from tests.single_file import write_sd1_single_file

    original = load_pipeline(tiny_sd1_path)
    path = tmp_path / "model.safetensors"
    write_sd1_single_file(original, path)
    loaded = load_pipeline(str(path), model_config=tiny_sd1_path)
    assert model_family(loaded) == "sd1"
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k].reshape(ours[k].shape)) for k in ours), name

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="pass --model-config"):
        load_pipeline(str(path))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="cannot read this checkpoint"):
        load_pipeline(str(truncated))


def test_the_hub_probe_answers_in_a_connection_and_says_why_not():
    import socket

    from textual_inversion.models import probe_hub

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
            assert probe_hub.__wrapped__() is None
    with pytest.MonkeyPatch.context() as patch:  # the listener is closed: nothing answers on that port
        patch.setattr("huggingface_hub.constants.ENDPOINT", f"http://127.0.0.1:{port}")
        assert probe_hub.__wrapped__().startswith(f"no connection to 127.0.0.1:{port}: ")


def test_unreachable_hub_or_missing_path_fails_at_once(monkeypatch, tmp_path):
    """No HF_HUB_OFFLINE, no network: the cache alone is asked; `runs/x` with runs/ here is a missing folder."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    asked = []

    def snapshot_download(repo_id, local_files_only=False, **kwargs):
        asked.append((repo_id, local_files_only))
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.setattr("textual_inversion.models.probe_hub", lambda: "no connection to huggingface.co:443: test")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(UserError, match=r"someone/some-model: not in the Hugging Face cache and the hub cannot be "
                                        r"reached \(no connection to huggingface.co:443: test\)"):
        load_pipeline("someone/some-model")
    with pytest.raises(UserError, match=r"^--model runs/sd: no such folder here, and not in the Hugging Face cache"):
        load_pipeline("runs/sd")
    with pytest.raises(UserError, match=r"^--model ./sd: no such file or folder$"):
        load_pipeline("./sd")
    assert asked == [("someone/some-model", True), ("runs/sd", True)]


def test_threads_default_to_half_the_cpus_or_omp_num_threads(monkeypatch):
    import torch

    from textual_inversion.errors import UserError
    from textual_inversion.models import default_threads, use_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
        assert default_threads() == 4 and use_threads(None) == 4 and torch.get_num_threads() == 4
        monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
        assert default_threads() == 1  # never none
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own choice wins
        assert default_threads() == 3 and use_threads(2) == 2 and torch.get_num_threads() == 2
        with pytest.raises(UserError, match="--threads 0: must be at least 1"):
            use_threads(0)
    finally:
        torch.set_num_threads(before)


def test_a_hub_download_takes_the_pipeline_folders_not_the_single_files_beside_them():
    from huggingface_hub.utils import filter_repo_objects

    from textual_inversion.models import HUB_FILES

    repo = ["model_index.json", "flux1-dev.safetensors", "ae.safetensors", "README.md", "transformer/config.json",
            "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
            "transformer/diffusion_pytorch_model.safetensors.index.json", "text_encoder_2/model.safetensors",
            "tokenizer_2/spiece.model", "tokenizer/merges.txt", "tokenizer/vocab.json", "vae/diffusion_pytorch_model.bin"]
    assert sorted(filter_repo_objects(repo, allow_patterns=HUB_FILES)) == sorted(
        ["model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
         "transformer/diffusion_pytorch_model.safetensors.index.json", "text_encoder_2/model.safetensors",
         "tokenizer_2/spiece.model", "tokenizer/merges.txt", "tokenizer/vocab.json"])
