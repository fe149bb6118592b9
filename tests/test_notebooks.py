"""The two notebooks run top to bottom (on miniworld), as CI executes them."""

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def checkout_copy(tmp_path_factory):
    """A folder standing in for the checkout, shared by both notebooks: its examples/, and room for runs/.

    The notebooks write under the folder they are started in (or its parent, from notebooks/); run from
    here, they leave the real checkout alone, and personal_inference reuses the run train_concept made.
    """
    folder = tmp_path_factory.mktemp("checkout")
    (folder / "examples").symlink_to(NOTEBOOKS.parent / "examples")
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train_concept.ipynb", "personal_inference.ipynb"])
def test_notebook_runs_without_errors(name, checkout_copy):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(checkout_copy)}}).execute()
    assert (checkout_copy / "runs" / "notebook-teal-thing" / "learned_embeds.safetensors").is_file()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any(o.get("output_type") == "display_data" for o in outputs), "no image was shown"
