"""Whether a film is one a chest X-ray classifier can score: what its DICOM tags say of it, for `predict`.

A PACS export mixes modalities and body parts, and a network scores whatever it is given: a CT slice or a film
of a tibia gets a confident, meaningless probability. So each film is checked against the model's scope: a
radiograph (Modality CR, DX or DR), of the chest (BodyPartExamined CHEST, or THORAX as some vendors write it,
where the tag is set), in a view the run trained on (a lateral film for a run of frontal ones is out). PNG and
JPEG files carry no such tags: their scope is unknown.
"""

import dataclasses

RADIOGRAPHS = ("CR", "DX", "DR")   # computed, digital and direct radiography
CHEST = ("CHEST", "THORAX")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")
IN, OUT, UNKNOWN = "true", "false", "unknown"


@dataclasses.dataclass(frozen=True)
class Verdict:
  in_scope: str        # IN, OUT or UNKNOWN: the CSV's column
  reasons: tuple[str, ...]   # why it is out (or unknown), one per problem; empty when in scope
  kinds: tuple[str, ...]     # each reason's kind, for one warning line per kind


def _is_lateral(view: str) -> bool:
  return view.upper() in LATERAL_VIEWS


def assess(metadata: dict, trained_views: tuple[str, ...]) -> Verdict:
  """The scope of a film whose file said `metadata` (`dicom.METADATA_KEYS`), for a run that trained on
  `trained_views` (its data.views; empty: the datasets' own, which are frontal)."""
  modality, body_part, view = metadata.get("modality"), metadata.get("body_part"), metadata.get("view_position")
  if modality is None and body_part is None and view is None:
    return Verdict(UNKNOWN, ("the file carries no DICOM tags to check",), ())
  problems = []
  if modality is not None and modality not in RADIOGRAPHS:
    problems.append(("modality", f"Modality {modality} is not a radiograph ({', '.join(RADIOGRAPHS)})"))
  if body_part is not None and body_part not in CHEST:
    problems.append(("body part", f"BodyPartExamined {body_part} is not the chest"))
  if view is not None and _is_lateral(view) and not any(map(_is_lateral, trained_views)):
    problems.append(("view", f"ViewPosition {view} is lateral; the run trained on frontal films"))
  if problems:
    return Verdict(OUT, tuple(p for _, p in problems), tuple(k for k, _ in problems))
  if modality is None:
    return Verdict(UNKNOWN, ("no Modality tag",), ())
  return Verdict(IN, (), ())
