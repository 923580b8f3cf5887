"""Label vocabularies of the surgical datasets SurgAgent speaks about.

Cholec80 (Twinanda et al., EndoNet, IEEE TMI 2017): seven phases and seven tools.
CholecT50 (Nwoye et al., Rendezvous, MedIA 2022): instruments, verbs and targets of the
action triplets, in the order of the dataset's label JSON.
SAR-RARP50 (Psychogyios et al. 2023): the eight action classes of its suturing gestures.

    CHOLEC80_PHASES[2]  # "ClippingCutting"
"""

from __future__ import annotations

__all__ = [
    "mask_folder_instrument",
    "readable_label",
    "CHOLEC80_PHASES",
    "CHOLEC80_TOOLS",
    "CHOLECT50_INSTRUMENTS",
    "CHOLECT50_TARGETS",
    "CHOLECT50_VERBS",
    "CVS_CRITERIA",
    "GRID_CELLS",
    "SAR_RARP50_ACTIONS",
]

CHOLEC80_PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)

CHOLEC80_TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")

CHOLECT50_INSTRUMENTS = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
CHOLECT50_VERBS = (
    "grasp",
    "retract",
    "dissect",
    "coagulate",
    "clip",
    "cut",
    "aspirate",
    "irrigate",
    "pack",
    "null_verb",
)
CHOLECT50_TARGETS = (
    "gallbladder",
    "cystic_plate",
    "cystic_duct",
    "cystic_artery",
    "cystic_pedicle",
    "blood_vessel",
    "fluid",
    "abdominal_wall_cavity",
    "liver",
    "adhesion",
    "omentum",
    "peritoneum",
    "gut",
    "specimen_bag",
    "null_target",
)

# SAR-RARP50 action classes 0-7, as the dataset names them.
SAR_RARP50_ACTIONS = (
    "Other",
    "Picking-up the needle",
    "Positioning the needle tip",
    "Pushing the needle through the tissue",
    "Pulling the needle out of the tissue",
    "Tying a knot",
    "Cutting the suture",
    "Returning/dropping the needle",
)

# Strasberg's critical view of safety, as scored in Endoscapes2023.
CVS_CRITERIA = (
    "two and only two structures (cystic duct and cystic artery) enter the gallbladder",
    "the hepatocystic triangle is cleared of fat and fibrous tissue",
    "the lower third of the gallbladder is separated from the liver bed (cystic plate exposed)",
)

# The 3x3 grid of SurgVLM-Bench localisation questions, row by row.
GRID_CELLS = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)


def readable_label(label: str) -> str:
    """A label as shown to a model: ``Tissue_Manipulation`` -> ``Tissue Manipulation``.

    The answer parser reads either spelling, so gold labels keep the dataset's own.
    """
    return label.replace("_", " ")


_MASK_SUFFIXES = ("_labels", "_label", "_masks", "_mask")
_SIDES = ("left", "right")


def mask_folder_instrument(folder: str) -> tuple[str, str | None]:
    """The instrument and side a mask folder of EndoVis releases names.

    ``Left_Large_Needle_Driver_labels`` and ``Large_Needle_Driver_Left_labels`` both give
    ``("Large Needle Driver", "left")``; the ``_labels`` suffix is optional (EndoVis2017's
    dataset 6 has ``Prograsp_Forceps``), and a folder naming no side gives None for it.
    """
    stem = folder
    for suffix in _MASK_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    words = [word for word in stem.replace("-", "_").split("_") if word]
    side = None
    if words and words[0].lower() in _SIDES:
        side, words = words[0].lower(), words[1:]
    elif len(words) > 1 and words[-1].lower() in _SIDES:
        side, words = words[-1].lower(), words[:-1]
    return " ".join(words), side
