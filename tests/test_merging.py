"""Merging and editing embeddings (sums, concatenation, trimming, lengths) and what `inspect` shows of a file."""

import json

import pytest
import torch

from textual_inversion.cli import main, run
from textual_inversion.errors import UserError
from textual_inversion.formats import Embedding, describe, read_embedding, write_embedding
from textual_inversion.merging import Part, merge, parse_source, read_parts


def sd1(token: str, count: int = 2, seed: int = 0) -> Embedding:
    return Embedding(token, {"text_encoder": torch.randn(count, 768, generator=torch.Generator().manual_seed(seed))})


def sdxl(token: str, seed: int = 0) -> Embedding:
    generator = torch.Generator().manual_seed(seed)
    return Embedding(token, {"clip_l": torch.randn(2, 768, generator=generator),
                             "clip_g": torch.randn(2, 1280, generator=generator)})


def test_a_weight_is_only_a_trailing_number(tmp_path):
    assert parse_source("a.pt:0.7") == ("a.pt", 0.7)
    assert parse_source("runs/x:y/a.safetensors:-.5") == ("runs/x:y/a.safetensors", -0.5)
    assert parse_source("C:\\emb\\a.pt") == ("C:\\emb\\a.pt", None)
    assert parse_source("a.pt:1e-1") == ("a.pt", 0.1)
    named = tmp_path / "odd.pt:2"  # a file whose own name ends in ':<number>' is that file, unweighted
    named.write_bytes(b"")
    assert parse_source(str(named)) == (str(named), None)


def test_weighted_sum_and_average():
    a, b = sd1("<a>", seed=1), sd1("<b>", seed=2)
    merged = merge([Part("a.pt", a, 0.7), Part("b.pt", b, 0.3)], "<ab>")
    assert merged.token == "<ab>"
    assert torch.allclose(merged.vectors["text_encoder"], 0.7 * a.vectors["text_encoder"] + 0.3 * b.vectors["text_encoder"])
    recipe = json.loads(merged.metadata["merge"])
    assert recipe["mode"] == "sum" and [(s["file"], s["token"], s["weight"]) for s in recipe["sources"]] == \
        [("a.pt", "<a>", 0.7), ("b.pt", "<b>", 0.3)]


def test_files_without_weights_are_averaged_and_mixed_weights_refused(tmp_path):
    a, b = sd1("<a>", seed=1), sd1("<b>", seed=2)
    write_embedding(a, tmp_path / "a.pt", "a1111")
    write_embedding(b, tmp_path / "b.safetensors", "kohya")
    parts = read_parts([str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors")])
    assert [part.weight for part in parts] == [0.5, 0.5]
    averaged = merge(parts).vectors["text_encoder"]
    assert torch.allclose(averaged, (a.vectors["text_encoder"] + b.vectors["text_encoder"]) / 2)
    with pytest.raises(UserError, match="b.safetensors: has no weight while other files have one"):
        read_parts([f"{tmp_path / 'a.pt'}:0.7", str(tmp_path / "b.safetensors")])
    assert [part.weight for part in read_parts([str(tmp_path / "a.pt")], concat=True)] == [1.0]


def test_concatenation_puts_vectors_one_after_another():
    a, b = sd1("<a>", 2, seed=1), sd1("<b>", 3, seed=2)
    merged = merge([Part("a.pt", a), Part("b.pt", b, 2.0)], "<ab>", concat=True)
    assert merged.num_vectors == 5
    assert torch.equal(merged.vectors["text_encoder"][:2], a.vectors["text_encoder"])
    assert torch.equal(merged.vectors["text_encoder"][2:], 2.0 * b.vectors["text_encoder"])
    with pytest.raises(UserError, match="b.pt has 3 vector.*a.pt 2.*--concat"):
        merge([Part("a.pt", a), Part("b.pt", b)], "<ab>")


def test_keep_first_norm_and_scale():
    a = sd1("<a>", 3, seed=1)
    rows = a.vectors["text_encoder"]
    kept = merge([Part("a.pt", a)], keep=[2, 0])
    assert kept.token == "<a>" and torch.equal(kept.vectors["text_encoder"], rows[[2, 0]])
    assert torch.equal(merge([Part("a.pt", a)], first=2).vectors["text_encoder"], rows[:2])
    normed = merge([Part("a.pt", a)], norm=0.4).vectors["text_encoder"]
    assert torch.allclose(normed.norm(dim=-1), torch.full((3,), 0.4))
    assert torch.allclose(normed / normed.norm(dim=-1, keepdim=True), rows / rows.norm(dim=-1, keepdim=True))
    assert torch.allclose(merge([Part("a.pt", a)], factor=0.5).vectors["text_encoder"], rows * 0.5)
    trimmed_then_scaled = merge([Part("a.pt", a)], first=1, factor=2.0).vectors["text_encoder"]
    assert torch.allclose(trimmed_then_scaled, rows[:1] * 2.0)
    for options, message in [({"keep": [3]}, "--keep 3: the embedding has 3 vector"), ({"first": 4}, "--first 4"),
                             ({"keep": [0], "first": 1}, "give one of them"), ({"norm": -1.0}, "--norm -1.0"),
                             ({"norm": 1.0, "factor": 2.0}, "--norm and --scale")]:
        with pytest.raises(UserError, match=message):
            merge([Part("a.pt", a)], **options)


def test_sdxl_merges_per_encoder():
    a, b = sdxl("<a>", seed=1), sdxl("<b>", seed=2)
    summed = merge([Part("a.safetensors", a, 0.25), Part("b.safetensors", b, 0.75)], "<ab>")
    for name in ("clip_l", "clip_g"):
        assert torch.allclose(summed.vectors[name], 0.25 * a.vectors[name] + 0.75 * b.vectors[name])
    joined = merge([Part("a.safetensors", a), Part("b.safetensors", b)], "<ab>", concat=True)
    assert summed.family == joined.family == "sdxl" and joined.num_vectors == 4
    assert torch.equal(joined.vectors["clip_g"][2:], b.vectors["clip_g"])


@pytest.mark.parametrize("other", [sdxl("<x>"), Embedding("<y>", {"text_encoder": torch.randn(2, 1024)})])
def test_mismatched_families_name_both_files(other):
    with pytest.raises(UserError) as error:
        merge([Part("a.pt", sd1("<a>")), Part("other.safetensors", other)])
    message = str(error.value)
    assert "\n" not in message and "other.safetensors" in message and "a.pt" in message
    assert "768" in message and ("1280" in message or "1024" in message)


def test_merge_command_round_trip(tmp_path, capsys):
    a, b = sd1("<a>", seed=1), sd1("<b>", seed=2)
    write_embedding(a, tmp_path / "a.pt", "a1111")
    write_embedding(b, tmp_path / "b.safetensors", "diffusers")
    out = tmp_path / "ab.safetensors"
    assert run(["merge", f"{tmp_path / 'a.pt'}:0.7", f"{tmp_path / 'b.safetensors'}:0.3", "-o", str(out),
                "--token", "<ab>", "--format", "kohya", "--scale", "2"]) == 0
    assert "wrote" in capsys.readouterr().out
    merged = read_embedding(out)
    expected = 2 * (0.7 * a.vectors["text_encoder"] + 0.3 * b.vectors["text_encoder"])
    assert merged.token == "<ab>" and merged.file_format == "kohya .safetensors"
    assert torch.allclose(merged.vectors["text_encoder"], expected)
    recipe = json.loads(merged.metadata["merge"])
    assert [source["weight"] for source in recipe["sources"]] == [0.7, 0.3] and recipe["scale"] == 2.0

    concat = tmp_path / "ab.pt"
    run(["merge", str(tmp_path / "a.pt"), str(tmp_path / "b.safetensors"), "--concat", "--keep", "3,0",
         "-o", str(concat), "--format", "a1111"])
    joined = read_embedding(concat).vectors["text_encoder"]
    assert torch.equal(joined, torch.stack([b.vectors["text_encoder"][1], a.vectors["text_encoder"][0]]))

    capsys.readouterr()
    assert run(["inspect", str(out)]) == 0
    shown = capsys.readouterr().out
    norms = ", ".join(f"{norm:.4g}" for norm in expected.norm(dim=-1).tolist())
    assert f"norms:    text_encoder {norms}" in shown.splitlines() and "merge:" in shown


def test_merge_command_errors_are_one_line(tmp_path, capsys):
    write_embedding(sd1("<a>"), tmp_path / "a.pt", "a1111")
    write_embedding(sdxl("<x>"), tmp_path / "x.safetensors", "diffusers")
    for args, message in [([str(tmp_path / "a.pt"), str(tmp_path / "x.safetensors"), "-o", str(tmp_path / "o.pt")],
                           "x.safetensors"),
                          ([str(tmp_path / "a.pt"), "-o", str(tmp_path / "a.pt")], "is the input file"),
                          ([str(tmp_path / "a.pt"), "--keep", "one", "-o", str(tmp_path / "o.pt")], "--keep one")]:
        with pytest.raises(SystemExit) as exit_info:
            main(["merge", *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_describe_lists_each_vectors_norm():
    embedding = Embedding("<t>", {"clip_l": torch.tensor([[3.0, 4.0]]), "clip_g": torch.tensor([[0.0, 2.0]])})
    assert "norms:    clip_l 5; clip_g 2" in describe(embedding).splitlines()


def test_nearest_words_of_a_words_own_row_is_that_word(tiny_sd1_path, tmp_path, capsys):
    from textual_inversion.inspection import nearest_words
    from textual_inversion.models import load_pipeline

    pipe = load_pipeline(tiny_sd1_path)
    rows = pipe.text_encoder.get_input_embeddings().weight.detach()
    ids = pipe.tokenizer.convert_tokens_to_ids(["cat</w>", "beach</w>"])
    embedding = Embedding("<t>", {"text_encoder": rows[ids].clone()})
    nearest = nearest_words(embedding, pipe, top_k=5)["text_encoder"]
    assert [row[0][0] for row in nearest] == ["cat", "beach"] and len(nearest[0]) == 5
    assert nearest[0][0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(row[i][1] >= row[i + 1][1] for row in nearest for i in range(4))

    path = write_embedding(embedding, tmp_path / "t.safetensors")
    assert run(["inspect", str(path), "--model", tiny_sd1_path, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    vector_lines = [line for line in lines if line.startswith("  vector ")]
    assert vector_lines[0].startswith("  vector 0: cat 1.000, ") and vector_lines[0].count(",") == 2
    assert vector_lines[1].startswith("  vector 1: beach 1.000")

    write_embedding(Embedding("<w>", {"text_encoder": torch.randn(1, 1024)}), tmp_path / "wide.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "wide.safetensors"), "--model", tiny_sd1_path])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "wide.safetensors" in err and "1024" in err and "768" in err
