"""Pivotal tuning: new token embeddings and LoRA adapters learn together.

The embeddings use `--lr`, the adapters `--lora-lr`; with `--ti-fraction f` the embeddings stop
learning after the first f x steps (the "pivot"), and the adapters refine around them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..options import option
from ..outputs import BUNDLE, LORA, OUTPUT_FILES
from .base import Method
from .lora import LoRA, LoRAOptions
from .textual_inversion import TextualInversion, TextualInversionOptions


@dataclass
class PivotalOptions(TextualInversionOptions, LoRAOptions):
    lora_lr: float | None = option(None, "learning rate of the LoRA weights (default: the method's on miniworld, "
                                         "listed under it, else 1e-4)", usual=1e-4)
    ti_fraction: float | None = option(None, "fraction of the steps during which the embeddings learn (default: the "
                                             "method's on miniworld, listed under it, else 1)", usual=1.0)
    bundle: bool = option(False, "also write the LoRA (kohya layout) with the embedding inside, one file for "
                          "AUTOMATIC1111 and OneTrainer (lora_bundle.safetensors)")


class PivotalTuning(Method):
    """Textual Inversion's rows and LoRA's adapters, each method doing its own part."""

    name = "pivotal"
    summary = "new token embeddings and LoRA adapters together"
    options_class = PivotalOptions
    default_lr = 5e-3  # of the embeddings; the adapters learn at --lora-lr
    # The concept sweep's settings (benchmarks/methods.py's, with textual inversion's 6 vectors at 0.05): on its 8
    # concepts whose conditioning the model draws, 2 seeds, 9 of 16 runs at the targets (mean 0.84 / 0.78), where the
    # usual defaults reached them in 2 (0.45 / 0.48; benchmarks/results/concept_sweep.md: pivotal,
    # pivotal-former-defaults). Textual inversion's defaults there reached 14. Both on the miniworld shipped until
    # 2026-12-05; pivotal tuning is not measured on the one shipped since.
    miniworld_defaults = {"vectors": 6, "lr": 0.05, "lora_lr": 1e-3, "rank": 8, "ti_fraction": 0.5, "batch_size": 4,
                          "steps": 800}
    adds_token = True
    parameters_may_go_unused = True  # the embeddings stop learning after --ti-fraction of the steps
    transformer_families = True

    def __init__(self, config):
        super().__init__(config)
        self.embeddings = self.part(TextualInversion)
        self.lora = self.part(LoRA)
        self.embedding_steps = math.ceil(self.options.ti_fraction * config.steps)

    def part(self, method: type[Method]) -> Method:
        """One part of pivotal tuning: that method, given its share of these options."""
        fields = dataclasses.fields(method.options_class)
        options = method.options_class(**{f.name: getattr(self.options, f.name) for f in fields})
        return method(dataclasses.replace(self.config, method=method.name, options=options))

    @classmethod
    def validate(cls, config) -> None:
        TextualInversion.validate(config)
        LoRA.validate(config)
        options = config.options
        if not 0 < options.lora_lr < 1:
            raise UserError(f"--lora-lr {options.lora_lr}: must be between 0 and 1")
        if not 0 <= options.ti_fraction <= 1:
            raise UserError(f"--ti-fraction {options.ti_fraction}: must be between 0 and 1")
        if options.per_layer or options.time_stages > 1:
            flag = "--per-layer" if options.per_layer else "--time-stages"
            raise UserError(f"{flag} is an option of --method textual-inversion; pivotal tuning learns one set of "
                            "vectors beside its LoRA")
        if options.token_gradient != "all":  # its LoRA learns in every block: the backward pass goes through them all
            raise UserError(f"--token-gradient {options.token_gradient} is an option of --method textual-inversion; "
                            "leave it out")
        if options.bundle and "." in config.token:  # a bundle's readers end the token at its first dot
            raise UserError(f"--bundle: the token {config.token} holds a '.', which a bundle LoRA cannot; rename it")

    def prepare(self, pipe, data) -> None:
        from ..models import is_transformer_family, model_family

        if self.options.bundle and is_transformer_family(pipe):
            raise UserError(f"--bundle: AUTOMATIC1111's bundle layout is for SD 1.x, 2.x and XL, not "
                            f"{model_family(pipe)}; leave it out (the embedding and the LoRA are written side by side)")
        self.embeddings.prepare(pipe, data)
        self.lora.prepare(pipe, data)

    def parameter_groups(self, lr: float) -> list[dict]:
        return self.embeddings.parameter_groups(lr) + self.lora.parameter_groups(self.options.lora_lr)

    def step_started(self, step: int) -> None:
        """Freeze the embeddings once their share of the steps is done (AdamW skips them then)."""
        for rows in self.embeddings.trainable_parameters():
            rows.requires_grad_(step < self.embedding_steps)

    def step_finished(self, step: int) -> None:
        self.embeddings.step_finished(step)

    def regularisation(self, prompts: list[str]):
        """--context-weight's penalty while the embeddings learn; after that it could teach nothing."""
        learning = any(rows.requires_grad for rows in self.embeddings.trainable_parameters())
        return self.embeddings.regularisation(prompts) if learning else None

    def state_dict(self) -> dict:
        return {**{f"ti.{k}": v for k, v in self.embeddings.state_dict().items()},
                **{f"lora.{k}": v for k, v in self.lora.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.embeddings.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ti.")})
        self.lora.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lora.")})

    def metadata(self) -> dict[str, str]:
        return self.embeddings.metadata()

    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        """The embedding and the LoRA, each in its own file; with `bundle`, also both in one."""
        written = {**self.embeddings.save(folder, metadata), **self.lora.save(folder, metadata)}
        if self.options.bundle:
            from ..lora_bundle import write_bundle
            from .lora import kohya_state_dict

            lora_state = kohya_state_dict(written[LORA], self.lora.alpha())
            written[BUNDLE] = write_bundle(lora_state, [self.embeddings.embedding(metadata)],
                                           Path(folder) / OUTPUT_FILES[BUNDLE], metadata)
        return written

    def release(self) -> None:
        self.embeddings.release()
        self.lora.release()
