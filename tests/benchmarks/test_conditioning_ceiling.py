import argparse


def test_a_held_out_concept_named_joins_the_set(tmp_path):
    from benchmarks.concept_set import CONCEPT_SET
    from benchmarks.conditioning_ceiling import concepts_named

    args = argparse.Namespace(workdir=str(tmp_path), concepts=["teal-checkered-square", "teal-circle"])
    concepts = concepts_named(args)
    assert set(concepts) == {c.name for _, c in CONCEPT_SET} | {"teal-checkered-square"}
    kind, folder, spec = concepts["teal-checkered-square"]
    assert kind == "held-out checkered" and folder == tmp_path / "concepts" / "teal-checkered-square"
    assert spec.attributes == {"shape": "square", "colour": "teal", "pattern": "checkered"}
    assert concepts["teal-circle"][0] == "hidden colour"
