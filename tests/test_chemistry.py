"""SMILES parsing and canonicalisation: canonical invariance, stereo kept, every invalid case named."""

from __future__ import annotations

import pandas as pd
import pytest

from models.chemistry import ParsePolicy, canonicalize, murcko_scaffold, parse_many, parse_smiles


@pytest.mark.parametrize(
    "variants",
    [
        ["OCC", "C(O)C", "[CH3][CH2][OH]", "C(C)O"],
        ["c1ccccc1O", "Oc1ccccc1", "C1=CC=CC=C1O"],
        ["C[C@H](N)C(=O)O", "N[C@@H](C)C(=O)O", "OC(=O)[C@H](C)N"],
    ],
)
def test_equivalent_smiles_share_one_canonical_form(variants: list[str]) -> None:
    forms = {canonicalize(v) for v in variants}
    assert len(forms) == 1 and None not in forms


def test_stereo_is_kept_and_distinguishes_enantiomers() -> None:
    l_ala, d_ala = canonicalize("C[C@H](N)C(=O)O"), canonicalize("C[C@@H](N)C(=O)O")
    assert "@" in l_ala and "@" in d_ala and l_ala != d_ala
    assert canonicalize("C/C=C/C") != canonicalize("C/C=C\\C")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("C1CC", "unparsable"),
        ("C(C)(C)(C)(C)C", "unparsable"),  # pentavalent carbon fails sanitisation
        ("CCé", "non-ASCII"),
        ("CC O", "whitespace"),
        ("C" * 1001, "too long"),
        (None, "not a string"),
        (42, "not a string"),
    ],
)
def test_invalid_inputs_get_a_named_reason(text: object, reason: str) -> None:
    parsed = parse_smiles(text)
    assert not parsed.ok and parsed.canonical is None and parsed.mol is None
    assert reason in parsed.error


def test_atom_limit() -> None:
    parsed = parse_smiles("C" * 30, ParsePolicy(max_atoms=20))
    assert parsed.error == "too many atoms (30 > 20)"
    assert parse_smiles("C" * 20, ParsePolicy(max_atoms=20)).ok


def test_salt_policies() -> None:
    salt = "CC(=O)[O-].[Na+]"
    assert canonicalize(salt) == "CC(=O)[O-]"  # default: largest fragment
    assert "reject" in parse_smiles(salt, ParsePolicy(salt_policy="reject")).error
    assert canonicalize(salt, ParsePolicy(salt_policy="keep")) == "CC(=O)[O-].[Na+]"


def test_parse_many_is_row_aligned_on_real_data(data_dir) -> None:
    smiles = pd.read_csv(data_dir / "moleculenet" / "tox21.csv")["smiles"].tolist()
    parsed = parse_many(smiles)
    assert len(parsed) == len(smiles)
    assert [p.input for p in parsed] == smiles
    invalid = [p for p in parsed if not p.ok]
    # The data README documents 8 Tox21 SMILES this RDKit cannot parse.
    assert len(invalid) == 8
    # canonical forms are fixed points
    for p in parsed[:300]:
        if p.ok:
            assert canonicalize(p.canonical) == p.canonical


def test_murcko_scaffold() -> None:
    assert murcko_scaffold("CCc1ccccc1") == "c1ccccc1"
    assert murcko_scaffold("CCO") == ""
    assert murcko_scaffold("not smiles") == ""


@pytest.mark.parametrize(
    ("smiles", "full"),
    [
        ("CCO", False),
        ("[NH4+].[Cl-]", False),  # bracket atoms with H counts are not hydrogen atoms
        ("[He]", False),
        ("[Hg+2]", False),
        ("C[C@H](O)N", True),
        ("C/C=C/C", True),
        ("F\\C=C\\F", True),
        ("[H]OC", True),
        ("[2H]C([2H])[2H]", True),
        ("[H+]", True),
    ],
)
def test_fast_parse_path_only_without_stereo_marks_or_hydrogen_atoms(smiles: str, full: bool) -> None:
    from models.chemistry import _FULL_PARSE

    assert bool(_FULL_PARSE.search(smiles)) is full


def test_fast_parse_path_gives_the_same_molecules_as_molfromsmiles(data_dir, monkeypatch) -> None:
    """Canonical SMILES, errors and graph features are identical with and without the fast path, on real
    molecules of several sets (the whole shared collection was checked the same way when it was added)."""
    import numpy as np
    from rdkit import Chem

    import models.chemistry as chem
    from models.featurizer import featurize_packed

    smiles: list[str] = []
    for rel, col in [
        ("moleculenet/bbbp.csv", "smiles"),
        ("moleculenet/tox21.csv", "smiles"),
        ("moleculenet/freesolv_SAMPL.csv", "smiles"),
        ("tdc/herg_karim.csv", "Drug"),
    ]:
        smiles += pd.read_csv(data_dir / rel)[col].astype(str).head(600).tolist()
    smiles += ["C1CC", "c1cccc1", "CC(C)(C)(C)C", "", "Cl[Na]", "C[N+](C)(C)C.[Br-]"]  # invalid, salt
    fast = featurize_packed(smiles)
    monkeypatch.setattr(chem, "mol_from_smiles", Chem.MolFromSmiles)
    full = featurize_packed(smiles)
    assert fast[0] == full[0] and fast[1] == full[1]
    for key in ("num_atoms", "num_edges", "x", "edge_index", "edge_attr"):
        assert np.array_equal(getattr(fast[2], key), getattr(full[2], key)), key
    assert sum(not chem._FULL_PARSE.search(s) for s in smiles) > 1000  # the fast path was exercised
