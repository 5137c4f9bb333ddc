"""`marginface people list|show|name|merge|split|not|remove|check GALLERY ...` over infer/people.People.

A person is their name, or `@ID` for an unnamed cluster (`@12`; `#12` would be a comment to the shell)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marginface.cli.common import list_findings, positive_int

PERSON_HELP = "a name, or @ID for an unnamed cluster (e.g. @12)"


def register(commands: argparse._SubParsersAction) -> None:
    """people list/show/name/merge/split/not/remove/check."""
    people = commands.add_parser("people", help="named people and unnamed clusters of a gallery's faces",
                                 description="People of a gallery's face records. " + PERSON_HELP[0].upper()
                                 + PERSON_HELP[1:] + ". Every change is one transaction; clustering runs never "
                                 "undo a decision made here.")
    sub = people.add_subparsers(dest="people_command", metavar="ACTION", required=True)
    cluster = commands.add_parser(
        "cluster", help="scan photos into a gallery's face records and organise them into people",
        description="Scan PHOTOS (files or folders; photos scanned before are skipped by their bytes) into face "
                    "records of GALLERY, then place every face in no person yet: to a named person when identify "
                    "would name them, else into an existing cluster or a new one (incremental; --full clusters "
                    "every face a user did not place again). Decisions made with `marginface people` are never "
                    "undone. The cut is stored in the gallery on the first run and reused after.")
    cluster.add_argument("gallery", help="gallery file (create it with `marginface gallery create`)")
    cluster.add_argument("photos", nargs="*", metavar="PHOTO_OR_FOLDER", help="photos to scan first (none: only "
                                                                              "organise the faces already stored)")
    cut = cluster.add_argument_group("clustering cut (default: the gallery's stored one, else the auto model's)")
    cut.add_argument("--threshold", type=float, help="fixed cosine cut (faces and groups below it stay apart)")
    cut.add_argument("--report", help="report.json of `marginface eval --out` for the gallery's model")
    cut.add_argument("--far", type=float, help="with --report: the false accept rate the cut operates at")
    cut.add_argument("--set", dest="set_name", help="with --report: which evaluated set (when several)")
    cluster.add_argument("--method", help="clustering method (default: the stored one, else 'average'; see "
                                          "docs/clustering.md)")
    cluster.add_argument("--min-size", type=positive_int, help="smallest cluster kept (1 to 1000; default 1)")
    cluster.add_argument("--full", action="store_true", help="re-cluster every face a user did not place")
    cluster.add_argument("--keep-thumbnails", action="store_true",
                         help="also store each face's aligned 112x112 crop (biometric data: off by default)")
    cluster.add_argument("--workers", type=positive_int, help="photos scanned at once (default: one per core)")
    cluster.add_argument("--annotate", metavar="OUT_DIR", help="write a contact sheet of every person with 2 or "
                                                               "more faces into OUT_DIR (cluster-ID.jpg, NAME-ID.jpg)")
    cluster.add_argument("--json", action="store_true", help="print the report as JSON")
    cluster.set_defaults(handler=_run_cluster)
    listing = sub.add_parser("list", help="named people, then clusters (largest first), with face counts")
    listing.add_argument("gallery")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_run_list)
    show = sub.add_parser("show", help="one person's faces (id, photo, box, who placed it)")
    show.add_argument("gallery")
    show.add_argument("person", help=PERSON_HELP)
    show.add_argument("--json", action="store_true")
    show.add_argument("--annotate", metavar="OUT.jpg", help="write a contact sheet of the person's faces")
    show.add_argument("--limit", type=positive_int, default=64, help="faces on the contact sheet (default 64)")
    show.set_defaults(handler=_run_show)
    name = sub.add_parser("name", help="name a cluster (or rename a person); an existing name merges into it")
    name.add_argument("gallery")
    name.add_argument("person", help=PERSON_HELP)
    name.add_argument("name")
    name.set_defaults(handler=_run_name)
    merge = sub.add_parser("merge", help="merge two people (the named one is kept, else the first)")
    merge.add_argument("gallery")
    merge.add_argument("a", metavar="PERSON", help=PERSON_HELP)
    merge.add_argument("b", metavar="OTHER", help=PERSON_HELP)
    merge.set_defaults(handler=_run_merge)
    split = sub.add_parser("split", help="move faces into a new cluster (or --to a person); runs leave them there")
    split.add_argument("gallery")
    split.add_argument("faces", nargs="+", type=int, metavar="FACE_ID")
    split.add_argument("--to", metavar="PERSON", help="move them into this person instead of a new cluster")
    split.set_defaults(handler=_run_split)
    not_ = sub.add_parser("not", help="mark faces 'not this person' (taken out; no run puts them back)")
    not_.add_argument("gallery")
    not_.add_argument("person", help=PERSON_HELP)
    not_.add_argument("faces", nargs="+", type=int, metavar="FACE_ID")
    not_.set_defaults(handler=_run_not)
    remove = sub.add_parser("remove", help="delete a person with their faces and templates")
    remove.add_argument("gallery")
    remove.add_argument("person", help=PERSON_HELP)
    remove.set_defaults(handler=_run_remove)
    check = sub.add_parser("check", help="verify every face embedding (exit 0 intact, 2 damaged ones listed)")
    check.add_argument("gallery")
    check.add_argument("--drop", action="store_true", help="delete the damaged faces (one transaction)")
    check.set_defaults(handler=_run_check)


def _open(path: str):
    from marginface.infer.gallery import Gallery
    from marginface.infer.people import People

    gallery = Gallery.open(path)
    return gallery, People(gallery)


def _run_cluster(args: argparse.Namespace) -> int:
    from marginface.cli.common import Progress
    from marginface.infer.contact_sheet import write_contact_sheets
    from marginface.infer.organise import check_min_size, organise
    from marginface.infer.people_scan import add_photos
    from marginface.infer.recognizer import FaceRecognizer
    from marginface.infer.thresholds import Threshold

    if args.min_size is not None:
        check_min_size(args.min_size, "--min-size")  # before any photo is scanned
    given = args.threshold is not None or args.report is not None or args.far is not None
    threshold = (Threshold.resolve("cluster", value=args.threshold, report=args.report, far=args.far,
                                   set_name=args.set_name) if given else None)
    gallery, people = _open(args.gallery)
    with gallery:
        scan = None
        if args.photos:
            recognizer = FaceRecognizer.from_gallery(gallery)
            with Progress("scan") as progress:
                scan = add_photos(people, recognizer, args.photos, progress, keep_thumbnails=args.keep_thumbnails,
                                  workers=args.workers)
        report = organise(people, threshold=threshold, method=args.method, min_size=args.min_size, full=args.full)
        sheets = write_contact_sheets(people, args.annotate) if args.annotate else []
    if args.json:
        print(json.dumps({"scan": scan.to_dict() if scan is not None else None, **report.to_dict()}))
    else:
        if scan is not None:
            print(f"scanned {scan.photos} photos into {scan.faces} faces ({scan.known} known before, "
                  f"{len(scan.without_face)} without a face, {len(scan.unreadable)} unreadable)")
            for path, why in scan.unreadable:
                print(f"  {path}: {why}")
        applied, counts = report.applied, report.people
        print(f"{report.mode} clustering ({report.settings.method} at {report.settings.threshold.value:.4f}): "
              f"{report.considered} faces placed ({report.to_named} to named people), {applied.moved} moved, "
              f"{len(applied.new_clusters)} new clusters; now {_counts_line(counts)}")
    if sheets:
        print(f"wrote {len(sheets)} contact sheets to {args.annotate}", file=sys.stderr)
    if scan is not None and scan.unreadable:
        print(f"marginface: error: {len(scan.unreadable)} photos could not be read (listed above)", file=sys.stderr)
        return 2
    return 0


def _counts_line(counts: dict) -> str:
    """'3 named people, 12 clusters, 240 faces (5 unplaced)' from People.counts()."""
    return ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in counts.items())


def _run_list(args: argparse.Namespace) -> int:
    gallery, people = _open(args.gallery)
    with gallery:
        listing, counts = people.people(), people.counts()
    if args.json:
        print(json.dumps({"people": [p.to_dict() for p in listing], **counts}))
        return 0
    for info in listing:
        print(f"{info.person.ref}\t{info.faces} faces\t{info.user_faces} placed by you\t{info.templates} templates")
    print(f"{counts['named']} named, {counts['clusters']} clusters; {counts['faces']} faces in {counts['photos']} "
          f"photos, {counts['unassigned']} unassigned, {counts['without_embedding']} without an embedding",
          file=sys.stderr)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    gallery, people = _open(args.gallery)
    with gallery:
        detail = people.show(args.person)
        if args.annotate:
            _write_sheet(people, detail.info.person, Path(args.annotate), args.limit)
    if args.json:
        print(json.dumps(detail.to_dict()))
        return 0
    info = detail.info
    print(f"{info.person.ref}: {info.faces} faces ({info.user_faces} placed by you), {info.templates} templates")
    for face in detail.faces:
        box = ",".join(f"{v:.0f}" for v in face.box)
        note = "" if face.has_embedding else "  (photo missing at the last reembed: not searched)"
        print(f"  face {face.id}\t{face.assigned_by}\t{face.photo_path}\tbox {box}\tscore "
              f"{face.detection_score:.2f}{note}")
    if detail.not_faces:
        print(f"  not this person: faces {', '.join(map(str, detail.not_faces))}")
    return 0


def _write_sheet(people, person, target: Path, limit: int) -> None:
    from marginface.infer.contact_sheet import write_contact_sheet

    left_out = write_contact_sheet(people, person, target, limit=limit)
    more = f" ({left_out} more not shown; raise --limit)" if left_out else ""
    print(f"wrote {target}{more}", file=sys.stderr)


def _change(args: argparse.Namespace, action: Callable[[Any], Any], said: Callable[[Any], str]) -> int:
    """Open the gallery, apply `action(people)` (one People change), close it and print said(its result)."""
    gallery, people = _open(args.gallery)
    with gallery:
        result = action(people)
    print(said(result))
    return 0


def _run_name(args: argparse.Namespace) -> int:
    return _change(args, lambda people: people.name(args.person, args.name),
                   lambda person: f"{args.person} is now {person.ref}")


def _run_merge(args: argparse.Namespace) -> int:
    return _change(args, lambda people: people.merge(args.a, args.b),
                   lambda kept: f"merged {args.a} and {args.b} into {kept.ref}")


def _run_split(args: argparse.Namespace) -> int:
    return _change(args, lambda people: people.split(args.faces, into=args.to),
                   lambda person: f"moved {len(set(args.faces))} faces to {person.ref}")


def _run_not(args: argparse.Namespace) -> int:
    return _change(args, lambda people: people.not_this_person(args.faces, args.person),
                   lambda out: f"marked {len(set(args.faces))} faces 'not {args.person}'; {len(out)} taken out of "
                               f"{args.person}")


def _run_remove(args: argparse.Namespace) -> int:
    return _change(args, lambda people: people.remove(args.person),
                   lambda removed: f"removed {removed['person']}: {removed['faces']} faces, "
                                   f"{removed['templates']} templates")


def _run_check(args: argparse.Namespace) -> int:
    gallery, people = _open(args.gallery)
    with gallery:
        damaged = people.check()
        faces = people.counts()["faces"]
        print(f"{args.gallery}: {faces} faces checked")
        if not list_findings(damaged, f"{len(damaged)} damaged face embeddings:", "OK: no damaged face embeddings"):
            return 0
        if args.drop:
            print(f"dropped {people.drop_faces([d.face_id for d in damaged])} damaged faces")
        else:
            print(f"recompute them from their photos with `marginface gallery reembed {args.gallery}`, or delete "
                  f"them with `marginface people check {args.gallery} --drop`")
    return 2
