"""real_scale builds the models from their configs and takes our step and diffusers' scripts' step on one pipeline."""

import math

import torch
from benchmarks.real_scale import (
    FLUX_DEPTH,
    NoClock,
    build_pipeline,
    component_sizes,
    full_depth_step,
    set_up,
    write_pictures,
)


def job_for(model: str, tmp_path) -> dict:
    return {"model": model, "workdir": str(tmp_path), "images": str(write_pictures(tmp_path / "pictures", 32)),
            "resolution": 32, "batch_size": 1, "device": "cpu", "precision": "fp32", "threads": 1, "seed": 0}


def test_flux_dev_configs_give_its_published_sizes_and_depth_keeps_fewer_blocks(tmp_path):
    full = component_sizes(build_pipeline("flux-dev", tmp_path, meta=True))
    assert round(full["transformer"] / 1e6) == 11901 and round(full["text_encoder_2"] / 1e6) == 4762
    reduced = build_pipeline("flux-dev", tmp_path, meta=True, depth=1)
    assert len(reduced.transformer.transformer_blocks) == 1 and len(reduced.transformer.single_transformer_blocks) == 2
    assert len(reduced.text_encoder_2.encoder.block) == 1
    assert reduced.transformer.config.num_attention_heads == 24  # full width


def test_both_flux_steps_learn_only_the_new_token_row(tmp_path):
    pipe, (ours, theirs), _ = set_up(job_for("tiny-flux", tmp_path), ("ours", "theirs"))
    theirs.activate()
    frozen = theirs.embedding.weight.detach().clone()
    assert math.isfinite(theirs.step(NoClock()))
    changed = (theirs.embedding.weight != frozen).any(dim=1).nonzero().flatten().tolist()
    assert changed == theirs.placeholder_ids  # every other row restored after the optimizer's step
    theirs.deactivate()
    ours.activate()
    before = [p.detach().clone() for p in ours.method.trainable_parameters()]
    t5_rows = pipe.text_encoder_2.get_input_embeddings().weight.detach().clone()
    assert math.isfinite(ours.step(NoClock()))
    assert any(not torch.equal(b, p) for b, p in zip(before, ours.method.trainable_parameters(), strict=True))
    assert torch.equal(pipe.text_encoder_2.get_input_embeddings().weight, t5_rows)  # T5 learns in neither
    phases = {phase for _, phase in ours.modules()} | {phase for _, phase in theirs.modules()}
    assert phases == {"text encoder", "T5 encoder", "UNet forward"}


def test_the_full_depth_estimate_scales_each_stack_by_its_own_depth():
    phases = {"step": 10.0, "UNet forward": 2.0, "backward": 3.0, "T5 encoder": 1.0}
    # rest 4 s; transformer 5 s x 19; T5 1 s x 24
    assert full_depth_step(phases, 1) == 4.0 + 5.0 * FLUX_DEPTH["num_layers"] + 1.0 * FLUX_DEPTH["t5_layers"]
    assert full_depth_step({"step": 4.0}, 2) == 4.0
