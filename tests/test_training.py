"""The shared training loop with the Textual Inversion method, on tiny models."""

import dataclasses
import functools
import json

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import MIXED_PRECISION_RUNS
from textual_inversion import TrainConfig, UserError, train
from textual_inversion.data import draw_batch
from textual_inversion.methods import get_method
from textual_inversion.models import denoiser, load_pipeline
from textual_inversion.objective import diffusion_loss, encode_conditioning


def all_weights(pipe) -> dict[str, torch.Tensor]:
    components = {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder,
                  "text_encoder_2": getattr(pipe, "text_encoder_2", None)}
    return {f"{name}.{key}": value.detach().cpu().clone()
            for name, module in components.items() if module is not None
            for key, value in module.state_dict().items()}


@pytest.mark.parametrize("family_path", ["tiny_sd1_path", "tiny_sdxl_path"])
def test_only_the_new_rows_learn(family_path, request, image_folder, tmp_path):
    pipe = load_pipeline(request.getfixturevalue(family_path))
    before = all_weights(pipe)
    config = TrainConfig(model="unused", images=str(image_folder), token="<blob>",
                         options={"init_token": "cat", "vectors": 2}, steps=3, lr=0.05, output_dir=str(tmp_path / "run"))
    result = train(config, pipe=pipe)
    after = all_weights(pipe)
    assert before.keys() == after.keys()
    # Training leaves the new rows loaded after the pretrained ones; those are bit-identical.
    changed = [key for key in before if not torch.equal(before[key], after[key][:before[key].shape[0]])]
    assert changed == [], f"frozen weights changed: {changed[:5]}"
    grown = [key for key in before if before[key].shape != after[key].shape]
    assert all("token_embedding" in key for key in grown) and grown

    saved = load_file(result.embedding_path)
    expected_keys = {"clip_l", "clip_g"} if family_path == "tiny_sdxl_path" else {"<blob>"}
    assert set(saved) == expected_keys
    for name, vectors in saved.items():
        assert vectors.shape[0] == 2
        encoder = pipe.text_encoder_2 if name == "clip_g" else pipe.text_encoder
        init = encoder.get_input_embeddings().weight[pipe.tokenizer.encode("cat", add_special_tokens=False)].mean(0)
        assert not torch.allclose(vectors[0], init), f"{name} did not learn"


def test_resume_after_interrupt_gives_the_same_embedding(train_config, tmp_path, monkeypatch):
    """Bit-identical on the CPU (GPU kernels may reorder sums, so there it is only close)."""
    import textual_inversion.training as training

    monkeypatch.setattr(training, "fixed_batch_every", lambda steps: 2)  # a fixed-batch loss on each side of step 3
    train_config = dataclasses.replace(train_config, device="cpu")
    straight = train(dataclasses.replace(train_config, output_dir=str(tmp_path / "straight")))

    real_save = training.save_checkpoint
    interrupts = []

    def save_then_interrupt(output_dir, step, *args, **kwargs):
        path = real_save(output_dir, step, *args, **kwargs)
        if step == 3 and not interrupts:  # Ctrl-C right after the step-3 checkpoint, once
            interrupts.append(step)
            raise KeyboardInterrupt
        return path

    interrupted_config = dataclasses.replace(train_config, output_dir=str(tmp_path / "interrupted"))
    monkeypatch.setattr(training, "save_checkpoint", save_then_interrupt)
    with pytest.raises(UserError, match="interrupted at step 3.*--resume"):
        train(interrupted_config)
    monkeypatch.setattr(training, "save_checkpoint", real_save)
    assert not (tmp_path / "interrupted" / "learned_embeds.safetensors").exists()

    resumed = train(dataclasses.replace(interrupted_config, resume=True))
    assert torch.equal(load_file(straight.embedding_path)["<blob>"], load_file(resumed.embedding_path)["<blob>"])
    assert [row[1] for row in resumed.loss_history] == [row[1] for row in straight.loss_history]
    fixed = [(folder / "loss_fixed_batch.csv").read_text().splitlines() for folder in (tmp_path / "straight", tmp_path / "interrupted")]
    assert fixed[0] == fixed[1] and [row.split(",")[0] for row in fixed[0]] == ["step", "0", "2", "4", "6"]


def test_run_folder_holds_everything(train_config):
    config = dataclasses.replace(train_config, validation_prompt="a photo of <blob>", validation_every=3,
                                 validation_steps=2, num_validation_images=2)
    result = train(config)
    names = {path.name for path in result.output_dir.iterdir()}
    assert {"learned_embeds.safetensors", "loss.csv", "loss_fixed_batch.csv", "loss.png", "run.json", "checkpoints",
            "previews"} <= names
    assert sorted(p.name for p in (result.output_dir / "previews").iterdir()) == ["step-000003.png", "step-000006.png"]
    rows = (result.output_dir / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr" and len(rows) == 1 + config.steps
    # Where the time went, by phase, in the result and in run.json; train's own clock covers all but the loading.
    assert list(result.phases) == ["loading", "preparing", "steps", "writing"]
    assert all(seconds >= 0 for seconds in result.phases.values()) and result.phases["steps"] > 0
    assert sum(result.phases.values()) - result.phases["loading"] == pytest.approx(result.seconds, abs=0.05)
    assert set(json.loads((result.output_dir / "run.json").read_text())["seconds"]) == set(result.phases)


def test_output_folder_of_another_run_is_refused(train_config):
    train(train_config)
    with pytest.raises(UserError, match="holds another run.*--resume.*--overwrite"):
        train(train_config)
    train(dataclasses.replace(train_config, overwrite=True))


def test_overwrite_leaves_no_checkpoint_or_preview_of_the_old_run(train_config):
    previews = {"validation_prompt": "a photo of <blob>", "validation_steps": 2, "num_validation_images": 1}
    train(dataclasses.replace(train_config, validation_every=2, **previews))
    result = train(dataclasses.replace(train_config, overwrite=True, steps=3, validation_every=3, **previews))
    assert sorted(p.name for p in (result.output_dir / "previews").iterdir()) == ["step-000003.png"]
    assert sorted(p.name for p in (result.output_dir / "checkpoints").iterdir()) == ["step-000003"]


def test_images_are_encoded_once(train_config, monkeypatch):
    from diffusers import AutoencoderKL

    calls = []
    real_encode = AutoencoderKL.encode

    def counting_encode(self, x, *args, **kwargs):
        calls.append(x.shape[0])
        return real_encode(self, x, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    train(dataclasses.replace(train_config, steps=5))
    assert sum(calls) == 4 * 2  # four images, each also flipped, encoded once for the whole run


def fixed_noise_loss(pipe, prompts: list[str], latents, noise, timesteps) -> float:
    with torch.no_grad():
        conditioning = encode_conditioning(pipe, prompts, [], torch.device("cpu"))
        return diffusion_loss(pipe.unet, pipe.scheduler, latents, noise, timesteps, conditioning).mean().item()


@pytest.mark.slow
def test_loss_goes_down_on_a_fixed_noise_set(train_config, tiny_sd1_path):
    """Learning the token lowers the diffusion loss measured on fixed latents, noise and timesteps.

    The tiny model is random, so text conditioning moves its loss only a little; the miniworld
    tests check that a learned concept is actually drawn.
    """
    from textual_inversion.concepts import load_concepts
    from textual_inversion.data import encode_images, list_images, load_rgb

    config = dataclasses.replace(train_config, steps=60, lr=0.02, batch_size=4, checkpoint_every=0)
    result = train(config)

    pipe = load_pipeline(tiny_sd1_path)
    images = [load_rgb(p) for p in list_images(config.images)]
    [cache] = encode_images(pipe.vae, images, 32, "center", 1, False, 0, torch.device("cpu"), torch.float32)
    generator = torch.Generator().manual_seed(123)
    latents = cache.sample(torch.arange(4).repeat(8), generator, pipe.vae.config.scaling_factor)
    noise = torch.randn(latents.shape, generator=generator)
    timesteps = torch.randint(0, 1000, (len(latents),), generator=generator)
    baseline = fixed_noise_loss(pipe, ["a photo of a cat"] * len(latents), latents, noise, timesteps)
    load_concepts(pipe, [result.output_dir])
    learned = fixed_noise_loss(pipe, ["a photo of a <blob>"] * len(latents), latents, noise, timesteps)
    assert learned < baseline, (learned, baseline)


def test_options_that_shape_the_run(train_config):
    """bf16 on the CPU, lr scaling, accumulation, random crops, a schedule: the run honours each."""
    config = dataclasses.replace(train_config, steps=4, mixed_precision="bf16", scale_lr=True, grad_accum=2,
                                 crop="random", crop_variants=3, lr_scheduler="linear", checkpoint_every=0)
    result = train(config)
    rows = [line.split(",") for line in (result.output_dir / "loss.csv").read_text().splitlines()[1:]]
    first_lr = float(rows[0][2])
    assert first_lr == pytest.approx(0.05 * 2 * 2 * 3 / 4)  # scaled by batch x accumulation, then linear decay
    assert float(rows[-1][2]) == 0.0
    vectors = load_file(result.embedding_path)["<blob>"]
    assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()


def test_stratified_timesteps_reach_the_steps(train_config, monkeypatch):
    """--timesteps stratified: every batch drawn (the training steps and the fixed batch) covers the schedule's quarters."""
    from textual_inversion import training

    drawn = []

    def recording_draw(*args, **kwargs):
        batch = draw_batch(*args, **kwargs)
        schedule_length = args[4]
        drawn.append((kwargs["stratified"], sorted(int(t) * 4 // schedule_length for t in batch.timesteps)))
        return batch

    monkeypatch.setattr(training, "draw_batch", recording_draw)
    train(dataclasses.replace(train_config, steps=3, batch_size=4, timesteps="stratified", checkpoint_every=0))
    assert drawn and all(flag and quarters == [0, 1, 2, 3] for flag, quarters in drawn), drawn


def test_adam_options_reach_the_optimizer(train_config, monkeypatch):
    """--adam-beta1, --adam-beta2 and --adam-epsilon (diffusers' script's flags) are the optimizer's."""
    from textual_inversion import training

    built = []
    real = training.adamw
    monkeypatch.setattr(training, "adamw", lambda groups, **options: built.append(options) or real(groups, **options))
    train(dataclasses.replace(train_config, steps=1, checkpoint_every=0, adam_beta1=0.95, adam_beta2=0.99,
                              adam_epsilon=1e-6, weight_decay=0.01))
    assert built == [{"betas": (0.95, 0.99), "eps": 1e-6, "weight_decay": 0.01}]


def test_antithetic_noise_reaches_every_batch(train_config, monkeypatch):
    """--noise-sampling antithetic: the training steps and the fixed batch draw their noise in negated pairs."""
    from textual_inversion import training

    drawn = []

    def recording_draw(*args, **kwargs):
        batch = draw_batch(*args, **kwargs)
        drawn.append(kwargs["antithetic"] and torch.equal(batch.noise[1:2], -batch.noise[0:1]))
        return batch

    monkeypatch.setattr(training, "draw_batch", recording_draw)
    train(dataclasses.replace(train_config, steps=2, batch_size=2, checkpoint_every=0, noise_sampling="antithetic"))
    assert drawn and all(drawn)


def test_timestep_bias_reaches_every_batch(train_config, monkeypatch):
    """--timestep-bias later: the training steps and the fixed batch draw with the biased chances."""
    from textual_inversion import training

    drawn = []

    def recording_draw(*args, **kwargs):
        drawn.append(kwargs["timestep_chances"])
        return draw_batch(*args, **kwargs)

    monkeypatch.setattr(training, "draw_batch", recording_draw)
    train(dataclasses.replace(train_config, steps=2, batch_size=2, checkpoint_every=0, timestep_bias="later",
                              timestep_bias_portion=0.1, timestep_bias_multiplier=9.0))
    assert drawn and all(chances is not None and chances[-1].item() == pytest.approx(9 * chances[0].item())
                         for chances in drawn)


def test_timestep_bias_steps_ends_the_bias(train_config, monkeypatch):
    """--timestep-bias-steps 2: the fixed batch and steps 0 and 1 draw with the biased chances, the steps after
    uniformly."""
    from textual_inversion import training

    drawn = []

    def recording_draw(*args, **kwargs):
        drawn.append(kwargs["timestep_chances"] is not None)
        return draw_batch(*args, **kwargs)

    monkeypatch.setattr(training, "draw_batch", recording_draw)
    train(dataclasses.replace(train_config, steps=4, batch_size=2, checkpoint_every=0, timestep_bias="later",
                              timestep_bias_portion=0.5, timestep_bias_multiplier=3.0, timestep_bias_steps=2))
    assert drawn == [True, True, True, False, False]  # the fixed batch first, then one draw per step


def test_snr_gamma_weights_every_sample_of_the_step(train_config, monkeypatch):
    """--snr-gamma 5: each step's per-sample errors are multiplied by min-SNR weights at that batch's timesteps."""
    from textual_inversion import objective

    weighed, real_weights = [], objective.min_snr_weights

    def recording_weights(noise_scheduler, timesteps, gamma):
        weights = real_weights(noise_scheduler, timesteps, gamma)
        weighed.append((gamma, timesteps.tolist(), weights))
        return weights

    monkeypatch.setattr(objective, "min_snr_weights", recording_weights)
    train(dataclasses.replace(train_config, steps=2, batch_size=2, checkpoint_every=0, snr_gamma=5.0))
    assert weighed and all(gamma == 5.0 and len(timesteps) == 2 and weights.shape == (2,) for gamma, timesteps, weights
                           in weighed)
    plain_calls = len(weighed)
    train(dataclasses.replace(train_config, steps=2, batch_size=2, checkpoint_every=0,
                              output_dir=train_config.output_dir + "-plain"))
    assert len(weighed) == plain_calls  # off by default
    # The weights multiply the loss itself: weighted by zero, every recorded loss is zero.
    monkeypatch.setattr(objective, "min_snr_weights", lambda scheduler, timesteps, gamma: torch.zeros(len(timesteps)))
    zeroed = train(dataclasses.replace(train_config, steps=2, batch_size=2, checkpoint_every=0, snr_gamma=5.0,
                                       output_dir=train_config.output_dir + "-zeroed"))
    assert zeroed.loss_history and all(loss == 0 for _, loss, _ in zeroed.loss_history)


@pytest.mark.parametrize("option,message", [({"snr_gamma": 5.0}, "--snr-gamma weights a UNet model's noise schedule"),
                                            ({"validation_sampler": "dpm++"}, "samples with its own flow-matching")])
def test_unet_only_options_are_refused_for_flow_matching(option, message, tiny_flux_path, image_folder, tmp_path):
    config = TrainConfig(model=tiny_flux_path, images=str(image_folder), token="<blob>", options={"init_token": "cat"},
                         steps=1, lr=0.05, output_dir=str(tmp_path / "run"), **option)
    with pytest.raises(UserError, match=message):
        train(config)


def test_previews_draw_with_the_sampler_asked_for_and_the_pipeline_keeps_its_own(train_config, tiny_sd1_path,
                                                                                   monkeypatch):
    from textual_inversion.config import SAMPLERS
    from textual_inversion.generation import SCHEDULERS

    assert tuple(SCHEDULERS) == SAMPLERS  # the options' names are the samplers generation builds
    pipe = load_pipeline(tiny_sd1_path)
    own = type(pipe.scheduler)
    drawn_with = []
    call = type(pipe).__call__

    @functools.wraps(call)  # the pipeline's defaults are read from its signature
    def recording_call(self, *args, **kwargs):
        drawn_with.append((type(self.scheduler).__name__, kwargs["num_inference_steps"]))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", recording_call)
    train(dataclasses.replace(train_config, steps=2, checkpoint_every=0, validation_prompt="a photo of <blob>",
                              validation_every=2, validation_sampler="dpm++", validation_steps=3), pipe=pipe)
    assert drawn_with == [("DPMSolverMultistepScheduler", 3)]
    assert type(pipe.scheduler) is own


def test_fp16_without_a_gpu_is_refused(train_config):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        train(dataclasses.replace(train_config, mixed_precision="fp16"))


@pytest.mark.parametrize("family_path", ["tiny_sd1_path", "tiny_sdxl_path", "tiny_flux_path", "tiny_sd3_path",
                                         "tiny_z_image_path"])
@pytest.mark.parametrize(("device", "precision"), MIXED_PRECISION_RUNS)
def test_mixed_precision_trains_and_draws_previews(family_path, device, precision, request, image_folder, tmp_path):
    pipe = load_pipeline(request.getfixturevalue(family_path))
    config = TrainConfig(model="unused", images=str(image_folder), token="<blob>", options={"init_token": "cat"}, steps=4,
                         lr=0.05, batch_size=2, resolution=32, mixed_precision=precision, validation_prompt="a <blob>",
                         validation_every=4, num_validation_images=1, validation_steps=2, device=device,
                         output_dir=str(tmp_path / "run"))
    result = train(config, pipe=pipe)
    assert denoiser(pipe).dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    assert denoiser(pipe).device.type == device
    assert (tmp_path / "run" / "previews").is_dir()
    for vectors in load_file(result.embedding_path).values():
        assert vectors.dtype == torch.float32 and torch.isfinite(vectors).all()
    assert all(torch.isfinite(torch.tensor(row[1])) for row in result.loss_history)


def test_the_models_move_to_the_device_cast_but_the_vae_which_encodes_in_fp32(tiny_sd1_path):
    from textual_inversion.training import move_to_device

    pipe = load_pipeline(tiny_sd1_path)
    move_to_device(pipe, torch.device("meta"), torch.bfloat16)  # "meta": a device that holds no memory
    for module, dtype in ((pipe.unet, torch.bfloat16), (pipe.text_encoder, torch.bfloat16), (pipe.vae, torch.float32)):
        assert {(p.device.type, p.dtype) for p in module.parameters()} == {("meta", dtype)}


@pytest.mark.parametrize(("method", "autocast_in_unet"), [("textual-inversion", False), ("lora", True)])
def test_a_frozen_half_precision_unet_runs_outside_autocast(method, autocast_in_unet, train_config):
    """As diffusers' scripts run it; where weights in the UNet learn (LoRA's, in fp32), autocast stays."""
    pipe = load_pipeline(train_config.model)
    calls = []
    pipe.unet.register_forward_pre_hook(lambda _, args: calls.append((torch.is_autocast_enabled("cpu"), args[0].dtype)))
    train(train_config.replaced(method=method, mixed_precision="bf16", steps=2, device="cpu", checkpoint_every=0),
          pipe=pipe)
    assert calls and set(calls) == {(autocast_in_unet, torch.bfloat16)}


def test_memory_and_speed_options_keep_the_result(train_config):
    """Gradient checkpointing and channels-last change how, not what: the same losses and embedding."""
    plain = train(dataclasses.replace(train_config, steps=3, device="cpu", checkpoint_every=0))
    lean = train(dataclasses.replace(train_config, steps=3, device="cpu", checkpoint_every=0, gradient_checkpointing=True,
                                     channels_last=True, output_dir=train_config.output_dir + "-lean"))
    for (_, a, _), (_, b, _) in zip(plain.loss_history, lean.loss_history, strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    # Recomputed activations round differently, which Adam can amplify where a gradient is near zero;
    # on average the vectors agree to a thousandth of one step (lr).
    difference = (load_file(plain.embedding_path)["<blob>"] - load_file(lean.embedding_path)["<blob>"]).abs()
    assert difference.mean() <= 1e-3 * train_config.lr


def test_adamw_is_fused_where_the_device_has_the_kernel_and_steps_as_the_default_does(train_config):
    from textual_inversion.training import adamw, make_optimizer

    assert make_optimizer(train_config) is adamw
    start = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    ends = []
    for build in (adamw, torch.optim.AdamW):
        row = torch.nn.Parameter(start.clone())
        optimizer = build([{"params": [row], "lr": 0.1}], weight_decay=0.01)
        gradients = torch.Generator().manual_seed(1)
        for _ in range(50):
            row.grad = torch.randn(row.shape, generator=gradients) * 1e-3
            optimizer.step()
        ends.append(row.detach())
    assert optimizer.defaults["fused"] is None  # PyTorch's own default: a loop over the tensors on the CPU
    assert adamw([{"params": [torch.nn.Parameter(start)]}]).defaults["fused"] is True
    # The same arithmetic in another order: the two agree to rounding, not to the bit.
    assert torch.allclose(ends[0], ends[1], atol=1e-5) and not torch.equal(start, ends[0])
    # A device without the kernel (here "meta") keeps PyTorch's default instead of failing at the first step.
    assert adamw([{"params": [torch.nn.Parameter(torch.empty(2, device="meta"))]}]).defaults["fused"] is None


def test_8bit_adam_needs_bitsandbytes(train_config):
    try:
        import bitsandbytes  # noqa: F401
        pytest.skip("bitsandbytes is installed")
    except ImportError:
        pass
    with pytest.raises(UserError, match="--use-8bit-adam needs bitsandbytes"):
        train(dataclasses.replace(train_config, use_8bit_adam=True))


def test_cross_initialisation_keep_norm_and_early_stop(train_config):
    from textual_inversion.models import load_pipeline as load

    pipe = load(train_config.model)
    config = train_config.replaced(steps=40, checkpoint_every=0, init_strategy="cross", keep_norm=True,
                                 early_stop_window=4, early_stop_threshold=0.99)
    result = train(config, pipe=pipe)
    assert result.stopped_early and 8 <= result.steps < 40  # needs two windows of fixed-batch losses first
    vectors = load_file(result.embedding_path)["<blob>"]
    fresh = load(train_config.model)
    ids = fresh.tokenizer("cat", return_tensors="pt").input_ids
    with torch.no_grad():
        start = fresh.text_encoder(ids).last_hidden_state[0, 1]
    assert vectors.norm() == pytest.approx(start.norm().item(), rel=1e-5)  # kept at the initial length
    assert not torch.allclose(vectors[0], start)  # but it learned a direction


def test_the_fixed_batch_loss_is_measured_about_50_times_a_run_but_not_more_often_than_every_10_steps():
    from textual_inversion.training import fixed_batch_every

    assert [fixed_batch_every(steps) for steps in (6, 100, 800, 3000)] == [10, 10, 16, 60]


def test_dvar_criterion():
    from textual_inversion.training import variance_has_settled

    noisy_then_flat = [1.0, 0.5, 0.9, 0.2, 0.8, 0.1] + [0.30, 0.31, 0.30, 0.31]
    assert not variance_has_settled(noisy_then_flat[:5], 3, 0.1)  # not two windows yet
    assert variance_has_settled(noisy_then_flat, 4, 0.1)
    assert not variance_has_settled([1.0, 0.5, 0.9, 0.2, 0.8, 0.1, 0.9, 0.1], 4, 0.1)


def test_stop_event_saves_a_checkpoint_that_resumes_to_the_same_embedding(train_config, tmp_path):
    """The web page's Stop: the run returns after the current step, resumable like after Ctrl-C."""
    import threading

    train_config = dataclasses.replace(train_config, device="cpu", checkpoint_every=0)
    straight = train(dataclasses.replace(train_config, output_dir=str(tmp_path / "straight")))

    stop, reported = threading.Event(), []

    def report_then_stop_at_4(step: int, loss: float) -> None:
        reported.append(step)
        if step == 4:
            stop.set()

    stopped_config = dataclasses.replace(train_config, output_dir=str(tmp_path / "stopped"))
    stopped = train(stopped_config, stop=stop, on_step=report_then_stop_at_4)
    assert stopped.stopped and stopped.steps == 4 and stopped.outputs == {}
    assert reported == [1, 2, 3, 4]
    assert (tmp_path / "stopped" / "checkpoints" / "step-000004").is_dir()
    assert not (tmp_path / "stopped" / "learned_embeds.safetensors").exists()
    assert '"status": "stopped"' in (tmp_path / "stopped" / "run.json").read_text()

    resumed = train(dataclasses.replace(stopped_config, resume=True))
    assert not resumed.stopped and resumed.steps == train_config.steps
    assert torch.equal(load_file(straight.embedding_path)["<blob>"], load_file(resumed.embedding_path)["<blob>"])


def test_resuming_with_another_count_of_vectors_says_which_options(train_config, tmp_path):
    """A run begun with 1 vector, resumed with 2 (as one begun on miniworld before its defaults changed, resumed
    without its --vectors): one line naming the options, not a shape error."""
    import threading

    stop = threading.Event()
    config = dataclasses.replace(train_config, device="cpu", checkpoint_every=0, output_dir=str(tmp_path / "run"))
    train(config, stop=stop, on_step=lambda step, loss: stop.set() if step == 2 else None)
    with pytest.raises(UserError, match=r"^--resume: the checkpoint holds 1 vector\(s\) for the token where this run makes "
                                        r"2; resume with the options the run began with \(its --vectors"):
        train(config.replaced(vectors=2, resume=True))


def test_a_run_says_its_main_settings(train_config, caplog):
    import logging

    caplog.set_level(logging.INFO)
    train(dataclasses.replace(train_config, steps=1, checkpoint_every=0, ema_decay=0.9))
    assert "textual-inversion: 1 steps, lr 0.05, batch 2, 1 vector(s), moving average 0.9\n" in caplog.text + "\n"
    # On miniworld the line also says the options left out took the method's measured settings.
    from textual_inversion.training import report_settings

    caplog.clear()
    config = TrainConfig(images="pics", token="<t>", options={"init_token": "dog"})
    report_settings(config, get_method(config.method)(config))
    assert "textual-inversion: 800 steps, lr 0.1, batch 4, 6 vector(s), moving average 0.99 (miniworld's defaults for the " \
           "options left out)" in caplog.text
    lora = TrainConfig(images="pics", token="sks", method="lora")
    report_settings(lora, get_method(lora.method)(lora))
    assert "lora: 3200 steps, lr 0.001, batch 4, cosine schedule, LoRA rank 8 (all layers) (miniworld's defaults " \
           "for the options left out)" in caplog.text


def test_one_image_is_warned_about(train_config, image_folder, caplog):
    for extra in sorted(image_folder.iterdir())[1:]:
        extra.unlink()
    train(dataclasses.replace(train_config, steps=1, checkpoint_every=0))
    assert "only one image; 3-5 varied pictures give a better concept" in caplog.text


def test_the_moving_average_is_what_the_run_gives_and_it_resumes(train_config, tmp_path):
    """--ema-decay: the saved vectors are the average of the steps' vectors, not the last step's; a run stopped
    and resumed ends at the same average as one straight through."""
    import threading

    from textual_inversion.training import update_average

    average, parameter = [torch.zeros(2)], [torch.ones(2)]
    update_average(average, parameter, 0.9, step=0)  # the first steps follow closely: 1 - 1/10
    assert torch.allclose(average[0], torch.full((2,), 0.9))
    update_average(average, parameter, 0.9, step=1000)
    assert torch.allclose(average[0], torch.full((2,), 0.91))

    config = dataclasses.replace(train_config, device="cpu", checkpoint_every=0, ema_decay=0.8)
    straight = train(dataclasses.replace(config, output_dir=str(tmp_path / "straight")))
    plain = train(dataclasses.replace(config, ema_decay=0.0, output_dir=str(tmp_path / "plain")))
    averaged_vectors, last_vectors = (load_file(r.embedding_path)["<blob>"] for r in (straight, plain))
    assert not torch.allclose(averaged_vectors, last_vectors)  # the same steps, another result

    stop = threading.Event()
    stopped_config = dataclasses.replace(config, output_dir=str(tmp_path / "stopped"))
    train(stopped_config, stop=stop, on_step=lambda step, loss: stop.set() if step == 3 else None)
    resumed = train(dataclasses.replace(stopped_config, resume=True))
    assert torch.equal(averaged_vectors, load_file(resumed.embedding_path)["<blob>"])


def test_the_fixed_batch_curve_follows_the_moving_average(train_config, tmp_path, monkeypatch):
    """With --ema-decay, loss_fixed_batch.csv scores the average (what the run would save), not the vectors as
    trained: an average held where it started gives a flat curve while the vectors themselves move."""
    import textual_inversion.training as training

    monkeypatch.setattr(training, "fixed_batch_every", lambda steps: 2)
    monkeypatch.setattr(training, "update_average", lambda *args: None)  # the average stays at the init vectors
    config = dataclasses.replace(train_config, device="cpu", checkpoint_every=0, ema_decay=0.9)
    held = train(dataclasses.replace(config, output_dir=str(tmp_path / "held")))
    moving = train(dataclasses.replace(config, ema_decay=0.0, output_dir=str(tmp_path / "moving")))
    curves = [[float(line.split(",")[1]) for line in (run.output_dir / "loss_fixed_batch.csv").read_text().splitlines()[1:]]
              for run in (held, moving)]
    assert len(set(curves[0])) == 1 and len(curves[0]) > 2, curves[0]
    assert curves[1][0] == curves[0][0] and len(set(curves[1])) > 1, curves[1]


def test_ema_decay_must_be_below_one(train_config):
    for decay in (1.0, -0.1):
        with pytest.raises(UserError, match=f"--ema-decay {decay}: must be at least 0"):
            dataclasses.replace(train_config, ema_decay=decay).validate()


def test_previews_and_checks_see_the_average_and_training_goes_on_from_its_own_values():
    from textual_inversion.training import parameters_set_to

    parameter = torch.nn.Parameter(torch.ones(3))
    with parameters_set_to([parameter], [torch.zeros(3)]):
        assert torch.equal(parameter.data, torch.zeros(3))
    assert torch.equal(parameter.data, torch.ones(3))
    with pytest.raises(RuntimeError), parameters_set_to([parameter], [torch.zeros(3)]):
        raise RuntimeError("a preview failed")
    assert torch.equal(parameter.data, torch.ones(3))
    with parameters_set_to([parameter], None):  # without --ema-decay: untouched
        assert torch.equal(parameter.data, torch.ones(3))


def test_phase_summary_names_each_phase_and_the_time_a_step():
    from textual_inversion.training import phase_summary

    phases = {"loading": 0.21, "preparing": 0.4, "steps": 84.0, "writing": 1.52}
    assert phase_summary(phases, 800) == ("loading 0.2 s, preparing 0.4 s, 800 steps 84.0 s (105 ms a step), "
                                          "writing 1.5 s")
    assert "ms a step" not in phase_summary(phases, 0)  # a resumed run that had no steps left
