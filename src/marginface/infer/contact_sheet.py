"""A contact sheet of one person's faces: aligned crops from the stored photos (or the kept thumbnails) in a grid,
each labelled with its face id, so that a person can be checked by eye before naming, merging or splitting."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from marginface.data.align import align_face
from marginface.infer.images import load_image
from marginface.infer.people import People, Person

log = logging.getLogger(__name__)
USER_COLOUR, AUTO_COLOUR, MISSING_COLOUR = (0, 170, 0), (150, 150, 150), (200, 0, 0)  # RGB


def contact_sheet(people: People, ref: str | Person, *, columns: int = 8, tile: int = 112,
                  limit: int = 64) -> tuple[np.ndarray, int]:
    """(RGB uint8 grid of up to `limit` faces of the person, how many faces were left out). A tile's bar is
    green for a user-placed face, grey for one a run placed; a red tile is a face whose photo is gone and that
    has no thumbnail."""
    if columns < 1 or tile < 16 or limit < 1:
        raise ValueError(f"contact sheet needs columns >= 1, tile >= 16 and limit >= 1 (got {columns}, {tile}, "
                         f"{limit})")
    faces = people.show(ref).faces
    shown = faces[:limit]
    rows = max(1, -(-len(shown) // columns))
    sheet = np.full((rows * tile, min(columns, max(1, len(shown))) * tile, 3), 255, np.uint8)
    photo: tuple[str, np.ndarray | None] = ("", None)  # the last photo decoded: a photo's faces come in a row
    for position, face in enumerate(shown):
        crop = None
        thumbnail = people.thumbnail(face.id) if face.has_thumbnail else None
        if thumbnail is not None:
            crop = load_image(thumbnail, name=f"thumbnail of face {face.id}")
        else:
            if photo[0] != face.photo_path:
                try:
                    photo = (face.photo_path, load_image(Path(face.photo_path)))
                except (OSError, ValueError) as err:
                    log.warning("face %d: cannot read %s (%s)", face.id, face.photo_path, err)
                    photo = (face.photo_path, None)
            rgb = photo[1]
            if rgb is not None:
                crop = align_face(rgb, np.asarray(face.landmarks, np.float64), 112)
        if crop is None:
            crop = np.full((tile, tile, 3), MISSING_COLOUR, np.uint8)
        elif crop.shape[:2] != (tile, tile):
            crop = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_AREA)
        crop = np.ascontiguousarray(crop)
        bar = max(2, tile // 28)
        crop[-bar:] = USER_COLOUR if face.assigned_by == "user" else AUTO_COLOUR
        cv2.putText(crop, str(face.id), (3, tile - bar - 4), cv2.FONT_HERSHEY_SIMPLEX, tile / 280, (255, 255, 0), 1)
        row, column = divmod(position, columns)
        sheet[row * tile:(row + 1) * tile, column * tile:(column + 1) * tile] = crop
    return sheet, len(faces) - len(shown)



def write_contact_sheet(people: People, ref: str | Person, target: str | Path, *, limit: int = 64) -> int:
    """Write one person's contact sheet to `target` (format from its suffix, JPEG without one); returns how many
    faces were left out. OSError naming the file when it cannot be written."""
    from marginface.data.image import encode_image

    target = Path(target)
    sheet, left_out = contact_sheet(people, ref, limit=limit)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_image(sheet, target.suffix or ".jpg"))
    except OSError as err:
        raise OSError(f"{target}: cannot write the contact sheet ({err.strerror or err})") from err
    return left_out


def sheet_name(person: Person) -> str:
    """A file name for a person's sheet: `cluster-12.jpg`, or the name with unsafe characters replaced."""
    if person.kind == "cluster":
        return f"cluster-{person.id}.jpg"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in person.ref).strip(".") or "person"
    return f"{safe}-{person.id}.jpg"


def write_contact_sheets(people: People, out_dir: str | Path, *, min_faces: int = 2, limit: int = 64) -> list[Path]:
    """One contact sheet per person with at least `min_faces` faces (named people and clusters) into `out_dir`;
    the files written, in People.people() order."""
    out_dir = Path(out_dir)
    written = []
    for info in people.people():
        if info.faces >= min_faces:
            target = out_dir / sheet_name(info.person)
            write_contact_sheet(people, info.person, target, limit=limit)
            written.append(target)
    log.info("gallery %s: %d contact sheets written to %s", people.path, len(written), out_dir)
    return written
