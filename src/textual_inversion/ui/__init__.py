"""The local web page (Gradio): teach a concept, generate with it, manage the concepts on disk.

`textual-inversion ui` serves it; `start(config)` does the same from Python and returns at once.
Gradio is an optional dependency (`pip install "textual-inversion[ui]"`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import UIConfig
from ..errors import UserError
from .jobs import TrainingJobs


@dataclass
class RunningPage:
    """A served page: its address, the Gradio app and the server's training queue."""

    url: str
    app: object  # gradio.Blocks
    jobs: TrainingJobs

    def wait(self) -> None:
        """Serve until Ctrl-C."""
        self.app.block_thread()

    def close(self) -> None:
        """Stop serving; a running training stops after its current step and saves a checkpoint."""
        self.app.close()
        self.jobs.close()


def start(config: UIConfig) -> RunningPage:
    """Serve the page for `config` in a background thread; returns once it answers."""
    config.validate()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no usage reports or version checks over the network
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the web page needs gradio: pip install "textual-inversion[ui]" (or pip install gradio)') from None
    from .app import THEME, build_app

    jobs = TrainingJobs()
    app = build_app(config, jobs)
    folders = [str(Path(folder).resolve()) for folder in (config.runs_dir, config.outputs_dir)]
    try:
        _, url, _ = app.launch(server_name=config.host, server_port=config.port, share=False, inbrowser=False,
                               prevent_thread_lock=True, quiet=True, allowed_paths=folders, theme=THEME)
    except OSError as error:  # the port is taken, or the address is not this machine's
        where = f"--port {config.port}" if config.port else f"--host {config.host}"
        raise UserError(f"{where}: cannot listen there ({str(error).split('. ')[0]}); choose another") from None
    return RunningPage(url, app, jobs)
