"""The shape of every training method: what it owns, what the shared loop asks of it.

A method says which parameters learn, how they start, how they are saved, and which options it has;
the loop in `training.py` does everything else (data, noise, optimizer, checkpoints, previews, resume).
The CLI reads every method's options to make its flags, so a method module imports torch, peft and
diffusers inside the functions that use them: `textual-inversion --help` stays instant.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from ..data import TrainingData


@dataclass
class MethodOptions:
    """A method's own options; their fields become CLI flags, TOML keys and form fields by name."""


class Method(ABC):
    """One way of learning a concept. Subclasses set the class attributes and implement the abstract methods."""

    name: ClassVar[str]  # the value of --method
    summary: ClassVar[str]  # what learns, for --method's help
    options_class: ClassVar[type[MethodOptions]] = MethodOptions
    default_lr: ClassVar[float]
    default_steps: ClassVar[int] = 500
    # On --model miniworld, the values of the options a run leaves unset (lr, steps and those declared with a
    # `usual` value, see options.option): the settings measured best there. Elsewhere, and for the options not named,
    # the usual defaults hold: miniworld is small and learns at rates a Stable Diffusion run would not survive.
    miniworld_defaults: ClassVar[dict[str, object]] = {}
    # True: the word is a new token whose vectors are saved (so it can be renamed); False: an ordinary
    # prompt word that the learned weights respond to (a trigger word).
    adds_token: ClassVar[bool] = False
    one_image: ClassVar[bool] = False  # made to learn from one picture (no warning for a single image)
    prior_preservation: ClassVar[bool] = False  # may train with --class-prompt (class images)
    # Some trainable parameters get no gradient in some steps (pivotal tuning stops its embeddings part-way):
    # with several processes, DDP must then look for them in every backward pass, which costs time.
    parameters_may_go_unused: ClassVar[bool] = False
    # Also trains the transformer families (Flux, SD3, Z-Image); the others are written for the UNet.
    transformer_families: ClassVar[bool] = False
    # Printed after a run from the command line: what to try if the result falls short (README: "Methods: which
    # one to use", from benchmarks/results/concept_sweep.md).
    advice: ClassVar[str] = ""

    def __init__(self, config):  # a TrainConfig (config.py builds on this registry, so it is not imported here)
        self.config = config
        self.options = config.options

    @classmethod
    def defaults_on_miniworld(cls, options: MethodOptions) -> dict[str, object]:
        """`miniworld_defaults`, less --vectors where an --init-embedding file gives the token its own count."""
        defaults = dict(cls.miniworld_defaults)
        if getattr(options, "init_embedding", ""):
            defaults.pop("vectors", None)
        return defaults

    @classmethod  # noqa: B027 (optional hook: nothing to check by default)
    def validate(cls, config) -> None:
        """Raise UserError naming the first of this method's options that cannot work with `config`."""

    @abstractmethod
    def prepare(self, pipe, data: TrainingData) -> None:
        """Add what learns to `pipe` (frozen, on the training device), knowing the run's pictures and captions."""

    @abstractmethod
    def parameter_groups(self, lr: float) -> list[dict]:
        """The optimizer's parameter groups; `lr` is --lr (or this method's default)."""

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter the optimizer updates."""
        return [parameter for group in self.parameter_groups(0.0) for parameter in group["params"]]

    def step_started(self, step: int) -> None:  # noqa: B027 (optional hook)
        """Called before optimizer step `step` (0-based)."""

    def step_finished(self, step: int) -> None:  # noqa: B027 (optional hook)
        """Called after optimizer step `step` (0-based) has updated the parameters."""

    def regularisation(self, prompts: list[str]) -> torch.Tensor | None:
        """A term added to each micro-batch's loss, given the prompts of its subject pictures; None: nothing."""
        return None

    @abstractmethod
    def state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint needs to restore the learned parameters."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""

    @abstractmethod
    def save(self, folder: Path, metadata: dict[str, str]) -> dict[str, Path]:
        """Write the result into `folder`; returns {output kind: path} (kinds in `rundir.OUTPUT_FILES`)."""

    def metadata(self) -> dict[str, str]:
        """This run's option values, stored in the files the method writes."""
        return {name: str(value) for name, value in vars(self.options).items()}

    def release(self) -> None:  # noqa: B027 (optional hook)
        """After training, even after an error: leave the pipeline generating with what was learned."""
