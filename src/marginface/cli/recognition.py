"""`marginface verify`, `gallery ...`, `enrol` and `identify` over FaceRecognizer, Gallery and infer.enrolment."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
from pathlib import Path

from marginface.cli.common import Progress, about, list_findings, positive_int
from marginface.errors import UsageError


def register(commands: argparse._SubParsersAction) -> None:
    """verify, gallery create/list/remove/rename/stats/check/reembed, enrol (alias enroll) and identify."""
    verify = commands.add_parser("verify", help="are two photos the same person? (exit 0 same, 1 different)")
    verify.add_argument("image1")
    verify.add_argument("image2")
    _add_model_options(verify)
    _add_threshold_options(verify, fpir=False)
    verify.add_argument("--json", action="store_true", help="print the decision as JSON")
    verify.set_defaults(handler=_run_verify)

    gallery = commands.add_parser("gallery", help="a gallery of known people (SQLite file)")
    sub = gallery.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="new gallery bound to one model, detector and threshold")
    create.add_argument("gallery", help="gallery file to create (e.g. people.db)")
    _add_model_options(create)
    _add_threshold_options(create, fpir=True)
    create.set_defaults(handler=_run_gallery_create)
    listing = sub.add_parser("list", help="identities and their template counts")
    listing.add_argument("gallery")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_run_gallery_list)
    remove = sub.add_parser("remove", help="delete an identity and its templates")
    remove.add_argument("gallery")
    remove.add_argument("name")
    remove.set_defaults(handler=_run_gallery_remove)
    rename = sub.add_parser("rename", help="rename an identity")
    rename.add_argument("gallery")
    rename.add_argument("old")
    rename.add_argument("new")
    rename.set_defaults(handler=_run_gallery_rename)
    stats = sub.add_parser("stats", help="counts, model, detector and threshold")
    stats.add_argument("gallery")
    stats.set_defaults(handler=_run_gallery_stats)
    check = sub.add_parser("check", help="verify every template (exit 0 intact, 2 damaged ones listed)",
                           description="Read every stored template and verify it: length, finite values, unit "
                                       "norm, checksum. Exit status 0 when all are intact, 2 when damaged ones "
                                       "were found (listed; with --drop also deleted).")
    check.add_argument("gallery")
    check.add_argument("--drop", action="store_true",
                       help="delete the damaged templates (one transaction); enrol those people again after")
    check.set_defaults(handler=_run_gallery_check)
    reembed = sub.add_parser("reembed", help="recompute every face record with a (new) model; people are kept",
                             description="Recompute every stored face from its photo (or kept thumbnail) with "
                                         "MODEL and bind the gallery to it, in one transaction; names, merges, "
                                         "splits and 'not this person' marks are kept. Faces whose photo is gone "
                                         "or changed are listed (exit status 2) and leave search until a later "
                                         "reembed finds their photo.")
    reembed.add_argument("gallery")
    reembed.add_argument("--model", required=True, help="ONNX file, exported model or run directory ('auto': "
                                                        "the published MobileFaceNet)")
    reembed.add_argument("--detector", help="YuNet ONNX file (default: the gallery's detector)")
    reembed.add_argument("--no-flip", action="store_true", help="disable flip-test embeddings")
    _add_threshold_options(reembed, fpir=True)
    reembed.add_argument("--drop-enrolled", action="store_true",
                         help="with a new model: delete the templates enrolled with `enrol` (their photo paths "
                              "are not stored, so they cannot be recomputed); enrol those people again after")
    reembed.add_argument("--json", action="store_true", help="print the report as JSON")
    reembed.set_defaults(handler=_run_gallery_reembed)

    enrol = commands.add_parser("enrol", aliases=["enroll"],
                                help="add people to a gallery: FOLDER/<name>/<images> or --name NAME IMG...",
                                description="Enrol the main face of each photo. A photo without a face is skipped "
                                            "and listed; a person none of whose photos shows a face is not "
                                            "enrolled (docs/recognition.md). 'enroll' is the same command.")
    enrol.add_argument("gallery")
    enrol.add_argument("inputs", nargs="+", metavar="FOLDER_OR_IMAGE",
                       help="a folder with one sub-folder per person, or (with --name) images of one person")
    enrol.add_argument("--name", help="enrol the given images (or folders of images) as this one person")
    enrol.add_argument("--allow-shared-photo", action="store_true",
                       help="enrol a photo already enrolled under another name too (refused by default: identify "
                            "would answer whichever came first)")
    _add_workers_option(enrol)
    enrol.set_defaults(handler=_run_enrol)

    identify = commands.add_parser("identify", help="name every face in photos (or 'unknown'); exit 2 when an "
                                                    "image cannot be read")
    identify.add_argument("gallery")
    identify.add_argument("inputs", nargs="+", metavar="IMG_OR_FOLDER")
    identify.add_argument("--k", type=positive_int, default=1, help="candidates listed per face (default 1)")
    identify.add_argument("--json", action="store_true",
                          help='print [{"image": path, "faces": [{"name", "score", "box", ...}]}], main face first')
    identify.add_argument("--annotate", metavar="OUT_DIR", help="write copies with boxes and names drawn")
    identify.add_argument("--index", choices=("exact", "hnsw", "ivf"), default="exact",
                          help="how the gallery is searched (default exact; hnsw/ivf for 10^5+ templates, "
                               "needs faiss-cpu)")
    _add_workers_option(identify)
    identify.set_defaults(handler=_run_identify)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="auto",
                        help="ONNX file, exported model or run directory; 'auto' (default): the published "
                             "MobileFaceNet, downloaded once (sha256 pinned)")
    parser.add_argument("--detector", default="auto", help="YuNet ONNX file; 'auto' (default): the published one")
    parser.add_argument("--no-flip", action="store_true", help="disable flip-test embeddings")


def _add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="images decoded, detected and embedded at once (default: one per usable CPU core; "
                             "1: one after another)")


def _add_threshold_options(parser: argparse.ArgumentParser, fpir: bool) -> None:
    group = parser.add_argument_group("threshold (required unless --model auto, which ships calibrated ones)")
    group.add_argument("--threshold", type=float, help="fixed cosine threshold (score >= it accepts)")
    group.add_argument("--report", help="report.json of `marginface eval --out` for this model")
    group.add_argument("--far", type=float, help="with --report: the false accept rate to operate at")
    if fpir:
        group.add_argument("--fpir", type=float, help="with --report: the false positive identification rate")
    group.add_argument("--set", dest="set_name", help="with --report: which evaluated set (when several)")


def _threshold(args: argparse.Namespace, task: str):
    """The Threshold the options ask for (Threshold.resolve decides; the shipped one for --model auto)."""
    from marginface.infer.thresholds import Threshold

    return Threshold.resolve(task, value=args.threshold, report=args.report, far=args.far,
                             fpir=getattr(args, "fpir", None), set_name=args.set_name, model=args.model)


def _run_verify(args: argparse.Namespace) -> int:
    from marginface.infer.recognizer import FaceRecognizer

    threshold = _threshold(args, "verify")
    recognizer = FaceRecognizer(args.model, args.detector, threshold=threshold, flip=not args.no_flip)
    result = recognizer.verify(args.image1, args.image2)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(f"score {result.score:.4f}: {'same person' if result.same else 'different people'} "
              f"(threshold {result.threshold.value:.4f}, {result.threshold.source})")
    return 0 if result.same else 1


def _run_gallery_create(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer

    threshold = _threshold(args, "identify")
    recognizer = FaceRecognizer(args.model, args.detector, threshold=threshold, flip=not args.no_flip)
    with Gallery.create(args.gallery, recognizer.fingerprint, threshold, model=recognizer.model_path,
                        detector=recognizer.detector_path, flip=not args.no_flip):
        pass
    print(f"created {args.gallery}: model {recognizer.model_path}, detector {recognizer.detector_path}, "
          f"threshold {threshold.value:.4f} ({threshold.source})")
    return 0


def _run_gallery_list(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        people = gallery.identities()
    if args.json:
        print(json.dumps([p.to_dict() for p in people]))
    else:
        for person in people:
            print(f"{person.name}\t{person.templates}")
        print(f"{len(people)} identities, {sum(p.templates for p in people)} templates", file=sys.stderr)
    return 0


def _run_gallery_remove(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        gallery.remove(args.name)
    print(f"removed {args.name}")
    return 0


def _run_gallery_rename(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        gallery.rename(args.old, args.new)
    print(f"renamed {args.old} -> {args.new}")
    return 0


def _run_gallery_stats(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        print(json.dumps(gallery.stats(), indent=2))
    return 0


def _run_gallery_check(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery

    with Gallery.open(args.gallery) as gallery:
        damaged = gallery.check()
        stats = gallery.stats()
        checked = stats["templates"] + len(damaged)
        print(f"{args.gallery}: {checked} templates of {stats['identities']} identities checked")
        if not list_findings(damaged, f"{len(damaged)} damaged templates (never used for a decision):",
                             "OK: no damaged templates"):
            return 0
        if args.drop:
            dropped = gallery.drop_templates([item.template_id for item in damaged])
            people = sorted({item.identity for item in damaged})
            print(f"dropped {dropped} damaged templates; enrol again: {', '.join(people)}")
        else:
            print(f"delete them with `marginface gallery check {args.gallery} --drop`, then enrol those people again")
    return 2


def _run_gallery_reembed(args: argparse.Namespace) -> int:
    from marginface.infer.gallery import Gallery
    from marginface.infer.people import People
    from marginface.infer.people_scan import reembed
    from marginface.infer.recognizer import FaceRecognizer

    given = args.threshold is not None or args.report is not None
    threshold = _threshold(args, "identify") if given else None  # None: the library decides (people_scan.reembed)
    with Gallery.open(args.gallery) as gallery:
        detector = args.detector if args.detector is not None else gallery.detector_path
        recognizer = FaceRecognizer(args.model, detector, flip=not args.no_flip)
        with Progress("reembed") as progress:
            report = reembed(People(gallery), recognizer, progress, threshold=threshold,
                             drop_enrolled=args.drop_enrolled)
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(f"re-embedded {report.faces} faces of {args.gallery} with {report.model} ({len(report.from_landmarks)} "
              f"from their stored landmarks, {len(report.from_thumbnails)} from thumbnails); {report.templates} "
              "templates")
        for name, count in sorted(report.dropped_enrolled.items()):
            print(f"  dropped {count} enrolled templates of {name!r}: enrol again")
        if report.missing:
            print(f"{len(report.missing)} faces could not be recomputed (kept with their people, out of search "
                  "until their photo is back and reembed runs again):")
            for face in report.missing:
                print(f"  {face}")
    if report.missing:
        print(f"marginface: error: {len(report.missing)} faces could not be recomputed (listed above)",
              file=sys.stderr)
        return 2
    return 0


def _run_enrol(args: argparse.Namespace) -> int:
    from marginface.fileio import sha256_file
    from marginface.infer.enrolment import FoundPhoto, NoUsablePhoto, check_plan, enrol, plan_enrolment
    from marginface.infer.gallery import Gallery, GalleryError
    from marginface.infer.recognizer import FaceRecognizer

    plan = plan_enrolment(args.inputs, args.name)
    total = plan.total
    skipped = [f"{path}: not in a person's sub-folder" for path in plan.loose]
    added = people = already = unreadable = 0
    with Gallery.open(args.gallery) as gallery:
        check_plan(gallery, plan)  # a look-alike of someone held refuses the plan before anyone is enrolled
        recognizer = FaceRecognizer.from_gallery(gallery)
        progress = Progress("enrol")
        # one scan over everyone's images (the workers stay busy across people), taken person by person
        results = recognizer.scan([path for person in plan.people for path in person.files], progress,
                                  workers=args.workers)
        with progress, contextlib.closing(results):
            for position, person in enumerate(plan.people):
                if not person.files:
                    skipped.append(f"{person.name}: no images to enrol")
                    continue
                photos = []
                for path, found in itertools.islice(results, len(person.files)):
                    if isinstance(found, Exception):
                        skipped.append(about(path, found))
                        unreadable += 1
                    else:
                        photos.append(FoundPhoto(str(path), sha256_file(path) if found else "", found))
                if not photos:
                    continue
                try:  # one transaction per person: a crash keeps every person committed before it
                    result = enrol(gallery, person.name, photos, recognizer.fingerprint,
                                   allow_shared_photos=args.allow_shared_photo)
                except NoUsablePhoto as err:  # the policy: nobody enrolled from faceless photos; each one listed
                    skipped.extend(str(item) for item in err.skipped)
                    continue
                except (GalleryError, OSError) as err:
                    after = len(plan.people) - position - 1
                    raise GalleryError(f"{err}; {args.command} stopped at {person.name!r}: {people} people "
                                       f"({added} new templates) were committed before it, {person.name!r} and the "
                                       f"{after} after it were not") from err
                skipped.extend(str(item) for item in result.skipped)
                added, already, people = added + result.added, already + result.duplicates, people + 1
    repeats = f"; {already} already in the gallery from the same image" if already else ""
    print(f"enrolled {added} new templates for {people} people into {args.gallery} ({total} images{repeats})")
    if skipped:
        print(f"{len(skipped)} not enrolled:")
        for line in skipped:
            print(f"  {line}")
    if unreadable:  # as identify: every readable image was enrolled, the status says some could not be read
        print(f"marginface: error: {unreadable} of {total} images could not be read (listed above)", file=sys.stderr)
        return 2
    return 0


def _run_identify(args: argparse.Namespace) -> int:
    from marginface.infer.annotate import annotate_photo
    from marginface.infer.gallery import Gallery
    from marginface.infer.recognizer import FaceRecognizer, image_files

    files = image_files(args.inputs)
    if not files:
        raise UsageError(f"no images in {' '.join(args.inputs)}")
    results = []
    with Gallery.open(args.gallery, index=args.index) as gallery:
        recognizer = FaceRecognizer.from_gallery(gallery)
        progress = Progress("identify")
        for path, found in recognizer.scan(files, progress, workers=args.workers):
            if isinstance(found, Exception):
                results.append({"image": str(path), "faces": [], "error": str(found)})
                continue
            decisions = gallery.identify_faces(found, args.k, recognizer.fingerprint)
            results.append({"image": str(path), "faces": [d.to_dict() for d in decisions]})
            if args.annotate:
                annotate_photo(path, decisions, Path(args.annotate))
        progress.close()
    failed = sum("error" in item for item in results)
    status = 2 if failed else 0  # every readable image was still identified; the status says some were not
    if args.json:
        print(json.dumps(results))
        if failed:
            print(f"marginface: error: {failed} of {len(results)} images could not be read (see \"error\")",
                  file=sys.stderr)
        return status
    for item in results:
        if "error" in item:
            print(f"{item['image']}: error: {item['error'].removeprefix(item['image'] + ': ')}")
        elif not item["faces"]:
            print(f"{item['image']}: no face found")
        for face in item["faces"]:
            score = "n/a" if face["score"] is None else f"{face['score']:.4f}"
            box = ",".join(f"{v:.0f}" for v in face["box"])
            print(f"{item['image']}: {face['name']} (score {score}, box {box})")
    if failed:
        print(f"marginface: error: {failed} of {len(results)} images could not be read (listed above)", file=sys.stderr)
    return status
