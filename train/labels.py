"""From the names a data set uses (class folders, TCIA codes, CSV labels) to the model's classes.

The binary model answers one question, blast or not, so every source class is mapped onto
:data:`~leukoedge.contract.CLASS_NAMES`; the differential model learns white-cell types, so every
source class is mapped onto one of :data:`~leukoedge.contract.DIFFERENTIAL_CLASSES`. The mapping
decides what the model learns, so it is explicit, overridable and recorded with every run: a name
that nothing maps is an error, never a guess, and labels never come from file names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leukoedge.contract import CLASS_NAMES, DIFFERENTIAL_CLASSES, POSITIVE_CLASS
from leukoedge.errors import DataError

NEGATIVE_CLASS = next(c for c in CLASS_NAMES if c != POSITIVE_CLASS)
#: Mapping value for a source class that is left out of the data set altogether.
IGNORE = "ignore"

#: The 15 cell-type codes of the TCIA AML-Cytomorphology_LMU release (Matek et al. 2019).
TCIA_CODES: tuple[str, ...] = (
    "BAS",  # basophil
    "EBO",  # erythroblast
    "EOS",  # eosinophil
    "KSC",  # smudge cell
    "LYA",  # atypical lymphocyte
    "LYT",  # typical lymphocyte
    "MMZ",  # metamyelocyte
    "MOB",  # monoblast
    "MON",  # monocyte
    "MYB",  # myelocyte
    "MYO",  # myeloblast
    "NGB",  # band neutrophil
    "NGS",  # segmented neutrophil
    "PMB",  # promyelocyte (bilobed)
    "PMO",  # promyelocyte
)
#: The blast codes counted as malignant by default: myeloblasts and monoblasts, the AML blasts.
#: Promyelocytes (PMO, PMB) stay non-malignant by default; pass a mapping to count them.
DEFAULT_MALIGNANT_CODES: tuple[str, ...] = ("MYO", "MOB")
#: Default TCIA code -> contract class mapping.
DEFAULT_TCIA_MAPPING: dict[str, str] = {
    code: (POSITIVE_CLASS if code in DEFAULT_MALIGNANT_CODES else NEGATIVE_CLASS) for code in TCIA_CODES
}

#: Folder names understood without a mapping (compared case-insensitively, "-" and " " as "_").
#: Only names of cell types: a folder such as "cancer", "AML" or "Blood_Cancer" may name a patient's
#: diagnosis, and an AML patient's smear holds normal neutrophils too, so such folders need a mapping.
FOLDER_SYNONYMS: dict[str, str] = {
    **{n: POSITIVE_CLASS for n in ("malignant", "blast", "blasts", "myeloblast", "myeloblasts")},
    **{
        n: NEGATIVE_CLASS
        for n in (
            "non_malignant", "nonmalignant", "benign", "normal", "healthy", "hem",
            "lymphocyte", "lymphocytes", "monocyte", "monocytes", "neutrophil", "neutrophils",
            "eosinophil", "eosinophils", "basophil", "basophils", "ig",
        )
    },
}  # fmt: skip

_SIDES = {**{c: c for c in CLASS_NAMES}, "nonmalignant": NEGATIVE_CLASS, IGNORE: IGNORE}


def normalize(name: str) -> str:
    """Lower case with "-" and spaces as "_": how class names are compared."""
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


def parse_mapping(text: str) -> dict[str, str]:
    """Parse a CLI mapping string into ``{source class: contract class or "ignore"}``.

    Accepted forms::

        "MYO,MOB"                                  malignant = MYO, MOB; every other TCIA code non-malignant
        "malignant=MYO,MOB"                        the same
        "non_malignant=NGS,LYT"                    the converse: every other TCIA code malignant
        "malignant=MYO;non_malignant=NGS"          only these names; any other class found is an error
        "malignant=blast_cells;non_malignant=normal_cells;ignore=KSC"

    With one side only, the TCIA codes not listed take the other class, so one short string
    changes the blast definition of the TCIA release. Names other than TCIA codes (folder
    names, CSV labels) are kept as written and compared case-insensitively.
    """
    text = text.strip()
    if not text:
        raise DataError("empty label mapping; expected e.g. 'MYO,MOB' or 'malignant=MYO,MOB'")
    mapping: dict[str, str] = {}
    sides: set[str] = set()
    for part in filter(None, (p.strip() for p in text.split(";"))):
        side_name, sep, names = part.partition("=")
        if not sep:
            side_name, names = POSITIVE_CLASS, part
        side = _SIDES.get(normalize(side_name))
        if side is None:
            raise DataError(
                f"label mapping {text!r}: unknown class {side_name.strip()!r}; "
                f"use {', '.join(CLASS_NAMES)} or {IGNORE}, e.g. 'malignant=MYO,MOB'"
            )
        listed = [n.strip() for n in names.split(",") if n.strip()]
        if not listed:
            raise DataError(f"label mapping {text!r}: no names after {side_name.strip()}=")
        for name in listed:
            name = name.upper() if name.upper() in TCIA_CODES else name
            if mapping.get(name, side) != side:
                raise DataError(f"label mapping {text!r}: {name} mapped to both {mapping[name]} and {side}")
            mapping[name] = side
        sides.add(side)
    labelled = sides & set(CLASS_NAMES)
    if len(labelled) == 1:
        other = NEGATIVE_CLASS if POSITIVE_CLASS in labelled else POSITIVE_CLASS
        for code in TCIA_CODES:
            mapping.setdefault(code, other)
    return mapping


def format_mapping(mapping: dict[str, str]) -> str:
    """The mapping as a CLI string that :func:`parse_mapping` reads back to the same dict."""
    parts = []
    sides = (POSITIVE_CLASS, NEGATIVE_CLASS, *DIFFERENTIAL_CLASSES, IGNORE)
    for side in sides + tuple(sorted(set(mapping.values()) - set(sides))):
        names = sorted(n for n, s in mapping.items() if s == side)
        if names:
            parts.append(f"{side}={','.join(names)}")
    return ";".join(parts)


class LabelResolver:
    """Maps source class names to contract classes and remembers which mapping it applied.

    Order: the user's mapping; a contract class name as itself; without a user mapping, the
    default TCIA mapping; then the unambiguous folder synonyms. Names nothing maps are collected
    so the loader can list them all in one error.
    """

    def __init__(self, mapping: dict[str, str] | None = None) -> None:
        self.user = dict(mapping) if mapping else None
        for name, side in (mapping or {}).items():
            if side not in (*CLASS_NAMES, IGNORE):
                raise DataError(f"label mapping: {name!r} -> {side!r} is not one of {(*CLASS_NAMES, IGNORE)}")
        self._user_norm = {normalize(k): v for k, v in (mapping or {}).items()}
        self.used: dict[str, str] = {}
        self.unknown: set[str] = set()

    def lookup(self, name: str) -> str | None:
        """The contract class (or "ignore") for ``name``, or None when nothing maps it."""
        key = normalize(name)
        label = self._user_norm.get(key)
        if label is None and key in CLASS_NAMES:
            label = key
        if label is None and self.user is None:
            label = DEFAULT_TCIA_MAPPING.get(name.upper())
        if label is None:
            label = FOLDER_SYNONYMS.get(key)
        return label

    def __call__(self, name: str) -> str | None:
        """Like :meth:`lookup`, and records the name as used or unknown."""
        label = self.lookup(name)
        if label is None:
            self.unknown.add(name)
        else:
            self.used[name] = label
        return label

    def effective(self, include_tcia: bool) -> dict[str, str]:
        """The mapping as applied: every name seen, plus all TCIA codes for a TCIA data set."""
        out = dict(self.used)
        if include_tcia:
            for code in TCIA_CODES:
                label = self.lookup(code)
                if label is not None:
                    out.setdefault(code, label)
        return dict(sorted(out.items()))

    def unknown_error(self, where: str) -> DataError:
        names = ", ".join(sorted(self.unknown))
        return DataError(
            f"{where}: no label for class name(s) {names}. Class names must be "
            f"{' or '.join(CLASS_NAMES)}, a TCIA code ({', '.join(TCIA_CODES)}) or a known folder name "
            f"(e.g. blast, normal, lymphocyte). Pass a label mapping such as "
            f"'malignant=NAME1;non_malignant=NAME2' (names listed after '{IGNORE}=' are left out)."
        )


# -- the differential: TCIA codes -> white-cell types --------------------------------------------
#: Training tasks: ``binary`` (blast or not, a sigmoid LeukoNet) or ``differential`` (one softmax
#: output per white-cell type; p_blast is the sum over the blast types).
TASKS = ("binary", "differential")

#: Default TCIA code -> differential cell type. Promyelocytes, myelocytes and metamyelocytes are
#: immature granulocytes, as a differential counts them; only myeloblasts and monoblasts are blasts.
DEFAULT_DIFFERENTIAL_MAPPING: dict[str, str] = {
    "MYO": "blast",
    "MOB": "blast",
    "NGS": "neutrophil",
    "NGB": "neutrophil",
    "LYT": "lymphocyte",
    "LYA": "atypical_lymphocyte",
    "MON": "monocyte",
    "EOS": "eosinophil",
    "BAS": "basophil",
    "PMO": "immature_granulocyte",
    "PMB": "immature_granulocyte",
    "MYB": "immature_granulocyte",
    "MMZ": "immature_granulocyte",
    "EBO": "erythroblast",
    "KSC": "smudge_cell",
}

#: Folder names understood as cell types without a mapping (other data sets' class folders).
DIFFERENTIAL_SYNONYMS: dict[str, str] = {
    **{c: c for c in DIFFERENTIAL_CLASSES},
    **{n: "blast" for n in ("blasts", "myeloblast", "myeloblasts", "monoblast", "monoblasts")},
    **{n: "neutrophil" for n in ("neutrophils", "segmented_neutrophil", "band_neutrophil")},
    **{n: "lymphocyte" for n in ("lymphocytes", "typical_lymphocyte")},
    "monocytes": "monocyte",
    "eosinophils": "eosinophil",
    "basophils": "basophil",
    **{n: "immature_granulocyte" for n in ("ig", "immature_granulocytes")},
    **{n: "erythroblast" for n in ("erythroblasts", "nrbc")},
    **{n: "smudge_cell" for n in ("smudge", "smudge_cells")},
}


def parse_differential_mapping(spec: str | Mapping[str, Any]) -> dict[str, str]:
    """Overrides of the default differential mapping, from a string, a TOML/JSON file or a dict.

    String form: ``"blast=MYO,MOB,PMO;ignore=KSC"`` (cell type = names; ``ignore`` leaves them out).
    File form (``.toml`` or ``.json``): a table of cell type -> list of names, e.g.
    ``blast = ["MYO", "MOB", "PMO"]``. Names not listed keep their default type. Errors name the
    key path (``mapping.toml: blast[2]``).
    """
    where = "label mapping"
    if isinstance(spec, str) and Path(spec).suffix.lower() in (".toml", ".json"):
        where, spec = spec, _read_mapping_file(Path(spec))
    if isinstance(spec, str):
        table: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            side, sep, names = part.partition("=")
            if not sep:
                raise DataError(f"{where} {spec!r}: {part!r} is not TYPE=NAME,NAME")
            table[side.strip()] = [n.strip() for n in names.split(",") if n.strip()]
        spec = table
    out: dict[str, str] = {}
    allowed = (*DIFFERENTIAL_CLASSES, IGNORE)
    for side, names in spec.items():
        target = normalize(str(side))
        if target not in allowed:
            raise DataError(f"{where}: {side}: unknown cell type; use one of {', '.join(allowed)}")
        if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
            raise DataError(f"{where}: {side}: expected a non-empty list of class names")
        for i, name in enumerate(names):
            if not isinstance(name, str) or not name.strip():
                raise DataError(f"{where}: {side}[{i}]: expected a class name, got {name!r}")
            key = name.strip().upper() if name.strip().upper() in TCIA_CODES else name.strip()
            if out.get(key, target) != target:
                raise DataError(f"{where}: {side}[{i}]: {key} is already mapped to {out[key]}")
            out[key] = target
    return out


def _read_mapping_file(path: Path) -> Mapping[str, Any]:
    import json

    import tomllib

    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such mapping file") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable mapping file ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a table of cell type -> list of class names")
    return data


class DifferentialResolver(LabelResolver):
    """Maps source class names to differential cell types: overrides, defaults, then synonyms."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        self.user = dict(overrides) if overrides else None
        self._user_norm = {normalize(k): v for k, v in (overrides or {}).items()}
        self.used = {}
        self.unknown = set()

    def lookup(self, name: str) -> str | None:
        key = normalize(name)
        return (
            self._user_norm.get(key)
            or DEFAULT_DIFFERENTIAL_MAPPING.get(name.upper())
            or DIFFERENTIAL_SYNONYMS.get(key)
        )

    def unknown_error(self, where: str) -> DataError:
        names = ", ".join(sorted(self.unknown))
        return DataError(
            f"{where}: no cell type for class name(s) {names}. Class names must be a cell type "
            f"({', '.join(DIFFERENTIAL_CLASSES)}), a TCIA code ({', '.join(TCIA_CODES)}) or a known "
            f"folder name; pass a mapping such as 'lymphocyte=NAME1;ignore=NAME2' or a mapping file."
        )
