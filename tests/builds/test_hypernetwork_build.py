"""The hypernetwork's build on a tiny model: pre-optimisation resumes, held-out identities stay out, training writes it."""

import torch

from textual_inversion.builds.hypernetwork.identities import (
    TUNING,
    all_identities,
    extra_held_out,
    held_out,
    training_identities,
    validation_identities,
)
from textual_inversion.builds.hypernetwork.preoptimize import preoptimize
from textual_inversion.builds.hypernetwork.train import train_hypernetwork
from textual_inversion.methods.hypernetwork import load_hypernetwork
from textual_inversion.methods.lidb_file import read_lidb
from textual_inversion.outputs import LIDB, OUTPUT_FILES


def test_held_out_identities_never_train_and_all_are_distinct():
    names = [identity.name for identity in all_identities()]
    assert len(names) == len(set(names)) == 192
    assert not {i.name for i in held_out()} & {i.name for i in training_identities(100)}
    validation = {i.name for i in validation_identities(TUNING)}
    assert len(validation) == TUNING and validation <= {i.name for i in training_identities(186)}
    # The extra evaluation identities: withheld by --validation TUNING + 16, and never the tuning ones.
    extra = {i.name for i in extra_held_out(16)}
    assert len(extra) == 16 and not extra & validation and extra | validation == {
        i.name for i in validation_identities(TUNING + 16)}


def test_preoptimize_resumes_and_the_hypernetwork_trains_on_its_output(tiny_sd1_path, tmp_path):
    dataset = tmp_path / "dataset"
    folders = preoptimize(dataset, identities=2, steps=1, lr=1e-2, images_per_identity=2, down_dim=100, up_dim=50,
                          seed=0, layers="cross-kv", model=tiny_sd1_path, down="token")
    written = {f: (f / "run" / OUTPUT_FILES[LIDB]).stat().st_mtime_ns for f in folders}
    assert len(written) == 2
    preoptimize(dataset, identities=2, steps=1, lr=1e-2, images_per_identity=2, down_dim=100, up_dim=50, seed=0,
                layers="cross-kv", model=tiny_sd1_path, down="token")
    assert {f: (f / "run" / OUTPUT_FILES[LIDB]).stat().st_mtime_ns for f in folders} == written  # skipped, not refitted
    first, second = (read_lidb(f / "run" / OUTPUT_FILES[LIDB])[0] for f in folders)
    assert all(torch.equal(first[name][0], second[name][0]) for name in first)  # one token reader for every identity
    summary = train_hypernetwork(dataset, tmp_path / "hyper", steps=2, batch_size=2, lr=1e-3, diffusion_weight=1.0,
                                 iterations=2, seed=0, model=tiny_sd1_path, validation=4)
    assert summary["identities"] == 2
    # The diffusion loss needs no fits: every training identity, except those withheld for validation.
    assert summary["diffusion_identities"] == 186 - 4
    assert summary["validation"] == sorted(i.name for i in validation_identities(4))
    weights_only = train_hypernetwork(dataset, tmp_path / "weights-only", steps=2, batch_size=2, lr=1e-3,
                                      diffusion_weight=0.0, iterations=2, seed=0, model=tiny_sd1_path)
    assert weights_only["diffusion_identities"] == 2 and weights_only["final_diffusion_loss"] is None
    network = load_hypernetwork(tmp_path / "hyper")
    assert network.config.token == "sks"
    assert network.config.layers and all(".attn2." in layer["name"] for layer in network.config.layers)
