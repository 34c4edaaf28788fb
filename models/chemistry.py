"""SMILES parsing and canonicalisation with RDKit.

Every input gets either a canonical SMILES (stereo kept) or a human-readable reason. Parsing happens
once: :func:`parse_smiles` returns the RDKit ``Mol`` alongside the canonical form so the graph
featurizer can reuse it.

Fast path. ``Chem.MolFromSmiles`` is parse + sanitize + explicit-hydrogen removal + stereo perception
(``assignStereochemistry(cleanIt=True)``). A SMILES with no stereo marks (``@ / \\``) and no hydrogen
atom (``[H]``, ``[2H]``…) gives those last two steps nothing to do, so it is parsed unsanitized and then
sanitized (the same ``SanitizeMol`` operations): about a third less parse time, and the same canonical
SMILES and graph (checked on every molecule of the shared data sets; ``tests/test_chemistry.py``).
Everything else takes the full ``MolFromSmiles`` path.

>>> parse_smiles("C(O)C").canonical == parse_smiles("OCC").canonical
True
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rdkit import Chem, RDLogger
from rdkit.Chem.Scaffolds import MurckoScaffold

RDLogger.DisableLog("rdApp.*")

SaltPolicy = Literal["largest", "reject", "keep"]

DEFAULT_MAX_SMILES_LENGTH = 1000
DEFAULT_MAX_ATOMS = 200


@dataclass(frozen=True, slots=True)
class ParsePolicy:
    """Limits and the policy for disconnected inputs (salts, mixtures)."""

    max_smiles_length: int = DEFAULT_MAX_SMILES_LENGTH
    max_atoms: int = DEFAULT_MAX_ATOMS
    salt_policy: SaltPolicy = "largest"


@dataclass(slots=True)
class ParsedMolecule:
    """The outcome of parsing one input: ``mol``/``canonical`` when valid, else ``error``."""

    input: str
    canonical: str | None
    mol: Chem.Mol | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


# stereo marks, or a bracket atom whose element is hydrogen ([H], [2H], [H+]; not [He], [Hg], [NH4+])
_FULL_PARSE = re.compile(r"[@/\\]|\[[0-9]*H(?![a-z])")


def mol_from_smiles(text: str) -> Chem.Mol | None:
    """``Chem.MolFromSmiles(text)``, through the fast path above when it provably gives the same molecule."""
    if _FULL_PARSE.search(text):
        return Chem.MolFromSmiles(text)
    mol = Chem.MolFromSmiles(text, sanitize=False)
    if mol is None:
        return None
    try:
        Chem.SanitizeMol(mol)
    except (Chem.rdchem.MolSanitizeException, RuntimeError, ValueError):
        return None
    return mol


def _invalid(text: str, reason: str) -> ParsedMolecule:
    return ParsedMolecule(input=text, canonical=None, mol=None, error=reason)


def _largest_fragment(mol: Chem.Mol) -> Chem.Mol:
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    # Largest by heavy-atom count; ties broken by canonical SMILES so the choice is deterministic.
    return max(frags, key=lambda m: (m.GetNumHeavyAtoms(), Chem.MolToSmiles(m)))


def parse_smiles(smiles: object, policy: ParsePolicy = ParsePolicy()) -> ParsedMolecule:
    """Parse and canonicalise one SMILES string, never raising for bad input."""
    if not isinstance(smiles, str):
        return _invalid(str(smiles), f"not a string (got {type(smiles).__name__})")
    text = smiles.strip()
    if not text:
        return _invalid(smiles, "empty SMILES")
    if len(text) > policy.max_smiles_length:
        return _invalid(smiles, f"SMILES too long ({len(text)} > {policy.max_smiles_length} characters)")
    if not text.isascii():
        return _invalid(smiles, "SMILES contains non-ASCII characters")
    if any(c.isspace() for c in text):
        return _invalid(smiles, "SMILES contains whitespace")
    mol = mol_from_smiles(text)
    if mol is None:
        return _invalid(smiles, "unparsable SMILES (RDKit could not parse or sanitize it)")
    if mol.GetNumAtoms() == 0:
        return _invalid(smiles, "SMILES has no atoms")
    if "." in text:
        n_frags = len(Chem.GetMolFrags(mol))
        if n_frags > 1:
            if policy.salt_policy == "reject":
                return _invalid(smiles, f"disconnected SMILES ({n_frags} fragments) rejected by salt policy")
            if policy.salt_policy == "largest":
                mol = _largest_fragment(mol)
    if mol.GetNumAtoms() > policy.max_atoms:
        return _invalid(smiles, f"too many atoms ({mol.GetNumAtoms()} > {policy.max_atoms})")
    return ParsedMolecule(input=smiles, canonical=Chem.MolToSmiles(mol), mol=mol, error=None)


def parse_many(smiles: Sequence[object], policy: ParsePolicy = ParsePolicy()) -> list[ParsedMolecule]:
    return [parse_smiles(s, policy) for s in smiles]


def canonicalize(smiles: object, policy: ParsePolicy = ParsePolicy()) -> str | None:
    """Canonical SMILES or ``None`` when the input is invalid."""
    return parse_smiles(smiles, policy).canonical


def murcko_scaffold(smiles_or_mol: str | Chem.Mol, include_chirality: bool = False) -> str:
    """Bemis–Murcko scaffold SMILES ('' for acyclic molecules or unparsable input)."""
    mol = Chem.MolFromSmiles(smiles_or_mol) if isinstance(smiles_or_mol, str) else smiles_or_mol
    if mol is None:
        return ""
    try:
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=include_chirality)
    except Exception:  # RDKit raises on a few exotic valence states
        return ""
