"""Placeholder tokens: the training-time wrapper and the loaded matrix give the same embeddings."""

import pytest
import torch

from textual_inversion.errors import UserError
from textual_inversion.models import load_pipeline
from textual_inversion.tokens import (
    add_placeholder_tokens,
    attach_placeholder_embedding,
    detach_placeholder_embedding,
    initializer_embeddings,
)


def test_wrapper_equals_a_resized_matrix_and_only_new_rows_get_gradients(tiny_sd1_path):
    pipe = load_pipeline(tiny_sd1_path)
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder.requires_grad_(False)
    rows = torch.randn(3, 768)
    ids = add_placeholder_tokens(tokenizer, "<t>", 3)
    wrapper = attach_placeholder_embedding(encoder, ids[0], rows)
    input_ids = tokenizer("a photo of <t> <t>_1 <t>_2 cat", padding="max_length", return_tensors="pt").input_ids
    assert set(ids) <= set(input_ids[0].tolist())
    out = encoder(input_ids)[0]
    out.sum().backward()
    with_gradient = [p for p in encoder.parameters() if p.grad is not None]
    assert len(with_gradient) == 1 and with_gradient[0] is wrapper.new_rows

    detach_placeholder_embedding(encoder)
    encoder.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        encoder.get_input_embeddings().weight[ids] = rows
        assert torch.equal(encoder(input_ids)[0], out.detach())


def test_initializer_rules(tiny_sd1_path):
    pipe = load_pipeline(tiny_sd1_path)
    embedding = pipe.text_encoder.get_input_embeddings()
    weight = embedding.weight.detach()
    cat_ids = pipe.tokenizer.encode("cat", add_special_tokens=False)
    assert torch.equal(initializer_embeddings(pipe.tokenizer, embedding, "cat", 2), weight[cat_ids].repeat(2, 1))
    two = pipe.tokenizer.encode("red dog", add_special_tokens=False)
    assert len(two) == 2
    assert torch.equal(initializer_embeddings(pipe.tokenizer, embedding, "red dog", 2), weight[two])
    assert torch.allclose(initializer_embeddings(pipe.tokenizer, embedding, "red dog", 3), weight[two].mean(0).repeat(3, 1))
    with pytest.raises(UserError, match="--init-token is empty"):
        initializer_embeddings(pipe.tokenizer, embedding, " ", 1)
    with pytest.raises(UserError, match="already in the model's vocabulary"):
        add_placeholder_tokens(pipe.tokenizer, "cat", 1)
