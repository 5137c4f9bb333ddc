"""Issue 16's hostile probes against the service, the gallery and the CLI, re-run by family, before and after.

    python bench/serve_probes.py [--before REF] [--out bench/results/serve/probes.json]

"after" is this working tree's src/; "before" is `git archive REF src` (default: the commit before issue 16's
second round) unpacked into a temporary folder, so both run here, in the same way, in fresh processes. Each
probe passes when the attack gets its one clear answer (the status and message the issue asks for, one
`marginface: error:` line and exit 2 on the command line); an exception, a 5xx or a hang past its timeout
fails it; probes that need a tmpfs mount are skipped where this process may not mount. Prints a table of
probes tried, passed, failed and skipped per family and writes it, with every probe's outcome, as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MARGINFACE_DATA", REPO.parent / "shared" / "data"))
MODEL = DATA / "face_recognition_mobilefacenet/mobilefacenet_dynamic_batch.onnx"
DETECTOR = DATA / "face_detection_yunet/face_detection_yunet_2023mar.onnx"
LFW = DATA / "lfw/lfw-deepfunneled"
BEFORE = "0c0bfe3"  # issue16b's base: the first round of issue 16 merged, none of this round
LOCAL = "http://127.0.0.1:8000"


class Skip(Exception):
    """The probe cannot run here (no tmpfs mount)."""


def lfw(name: str, index: int) -> Path:
    return LFW / name / f"{name}_{index:04d}.jpg"


def png(width: int, height: int, pixels=None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    (Image.fromarray(pixels) if pixels is not None else Image.new("RGB", (width, height), (128,) * 3)).save(
        buffer, "PNG")
    return buffer.getvalue()


def photo(name: str = "Colin_Powell", index: int = 1) -> tuple[str, bytes, str]:
    path = lfw(name, index)
    return path.name, path.read_bytes(), "image/jpeg"


# -- the probe runner (runs inside a process whose PYTHONPATH is the src/ under test) ---------------------------
class Probes:
    """Every probe as a method `family__name` returning None (passed) or raising (failed, the message says why)."""

    def __init__(self, work: Path) -> None:
        from marginface.infer.recognizer import FaceRecognizer

        self.work = work
        self.recognizer = FaceRecognizer(MODEL, DETECTOR, threshold=0.35)
        self.count = 0

    # helpers
    def gallery(self, folder: Path | None = None) -> Path:
        from marginface.infer.gallery import Gallery

        self.count += 1
        folder = folder or self.work
        path = folder / f"g{self.count}.db"
        Gallery.create(path, self.recognizer.fingerprint, self.recognizer.threshold, model=MODEL,
                       detector=DETECTOR).close()
        return path

    @contextlib.contextmanager
    def client(self, path: Path | None = None, **kwargs) -> Iterator:
        from fastapi.testclient import TestClient

        from marginface.serve import create_app

        app = create_app(path or self.gallery(), recognizer=self.recognizer, **kwargs)
        with TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as client:
            yield client

    def cli(self, *args: str) -> str:
        """The one error line of a CLI run that must fail as a user error (exit 2, no traceback)."""
        from marginface.cli import main

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main([str(a) for a in args])
        lines = [line for line in err.getvalue().splitlines() if line.startswith("marginface: error:")]
        assert status == 2 and len(lines) == 1 and "Traceback" not in err.getvalue(), (status, err.getvalue()[-300:])
        return lines[0]

    @contextlib.contextmanager
    def tmpfs(self, size: str) -> Iterator[Path]:
        self.count += 1
        folder = self.work / f"mnt{self.count}"
        folder.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True).returncode:
            raise Skip("cannot mount a tmpfs")
        try:
            yield folder
        finally:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)

    @staticmethod
    def status(answer, code: int, *fragments: str) -> None:
        assert answer.status_code == code, (answer.status_code, answer.text[:300])
        for fragment in fragments:
            assert fragment in answer.text, (fragment, answer.text[:300])

    def models(self) -> list[str]:
        return ["--model", str(MODEL), "--detector", str(DETECTOR)]

    # -- 5xx and tracebacks -> one clear answer ------------------------------------------------------------
    def errors__elongated_png_every_route(self) -> None:
        line = ("line.png", png(1, 20_000), "image/png")
        with self.client() as client:
            for url, files in [("/v1/detect", {"image": line}), ("/v1/embed", {"image": line}),
                               ("/v1/identify", {"image": line}), ("/v1/verify", {"image1": photo(), "image2": line})]:
                self.status(client.post(url, files=files), 400, "1x20000")
            self.status(client.post("/v1/identities", data={"name": "L"}, files=[("images", line)]), 400, "1x20000")

    def errors__elongated_png_cli_verify(self) -> None:
        (self.work / "line.png").write_bytes(png(1, 20_000))
        assert "1x20000" in self.cli("verify", lfw("Colin_Powell", 1), self.work / "line.png", *self.models(),
                                     "--threshold", "0.3")

    def errors__gallery_list_damaged_index(self) -> None:
        import sqlite3

        path = self.gallery()
        with self.client(path) as client:
            client.post("/v1/identities", data={"name": "Colin"}, files=[("images", photo())])
        db = sqlite3.connect(path)
        size = db.execute("PRAGMA page_size").fetchone()[0]
        pages = [r[0] for r in db.execute("SELECT pageno FROM dbstat WHERE name = 'templates_identity'")]
        db.close()
        data = bytearray(path.read_bytes())
        for page in pages:
            for offset in range((page - 1) * size, page * size, 7):
                data[offset] ^= 0x5A
        path.write_bytes(bytes(data))
        assert "malformed" in self.cli("gallery", "list", path)

    def errors__detector_as_model_verify(self) -> None:
        self.cli("verify", lfw("Colin_Powell", 1), lfw("Colin_Powell", 2), "--model", DETECTOR, "--detector",
                 DETECTOR, "--threshold", "0.3")

    def errors__detector_as_model_gallery_create(self) -> None:
        self.cli("gallery", "create", self.work / "detector.db", "--model", DETECTOR, "--detector", DETECTOR,
                 "--threshold", "0.3")
        assert not (self.work / "detector.db").exists()

    def _serve(self, *args: str) -> None:
        """`serve` with bad options must refuse before listening (one that serves instead is left running, on
        a port of its own, and fails the probe after 30 s)."""
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = str(free.getsockname()[1])
        options = [*args] if "--port" in args else [*args, "--port", port]
        done: list[BaseException | None] = []
        thread = threading.Thread(target=_attempt, args=(lambda: self.cli("serve", self.gallery(), *options), done),
                                  daemon=True)
        thread.start()
        thread.join(30)
        assert done, "serve started instead of refusing"
        if done[0] is not None:
            raise done[0]

    def errors__serve_upload_mb_inf(self) -> None:
        self._serve("--max-upload-mb", "inf")

    def errors__serve_upload_mb_nan(self) -> None:
        self._serve("--max-upload-mb", "nan")

    def errors__serve_upload_mb_1e_9(self) -> None:
        self._serve("--max-upload-mb", "1e-9")

    def errors__serve_port_99999(self) -> None:
        self._serve("--port", "99999")

    def errors__serve_port_minus_1(self) -> None:
        self._serve("--port", "-1")

    def errors__full_disk_enrol_507_and_healthz(self) -> None:
        with self.tmpfs("4m") as disk, self.client(self.gallery(disk)) as client:
            self.status(client.post("/v1/identities", data={"name": "A"}, files=[("images", photo())]), 201)
            with (disk / "filler").open("wb") as out, contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            files = [("images", photo("George_W_Bush", i)) for i in range(1, 9)]
            self.status(client.post("/v1/identities", data={"name": "B"}, files=files), 507, "full")
            assert client.get("/healthz").json().get("status") != "ok"

    def _raw(self, app, head: str, wait_s: float) -> tuple[bytes, float]:
        import uvicorn

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        start = time.monotonic()
        answer = b""
        try:
            with socket.create_connection(sock.getsockname(), timeout=wait_s) as conn:
                conn.sendall(head.encode() + b"--b\r\n")
                with contextlib.suppress(TimeoutError, ConnectionResetError):
                    while chunk := conn.recv(65536):
                        answer += chunk
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
        return answer, time.monotonic() - start

    def _app(self, **kwargs):
        from marginface.serve import create_app

        try:
            return create_app(self.gallery(), recognizer=self.recognizer, **kwargs)
        except TypeError:  # an option this version does not have
            kwargs.pop("body_timeout_s", None)
            return create_app(self.gallery(), recognizer=self.recognizer, **kwargs)

    HEAD = ("POST /v1/identify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 5242880\r\n{key}\r\n")

    def errors__key_checked_before_the_body(self) -> None:
        answer, seconds = self._raw(self._app(api_key="k"), self.HEAD.format(key=""), wait_s=5)
        assert answer.startswith(b"HTTP/1.1 401") and seconds < 5, (answer[:80], seconds)

    def errors__stalled_body_times_out(self) -> None:
        app = self._app(api_key="k", body_timeout_s=1.0)
        answer, seconds = self._raw(app, self.HEAD.format(key="X-API-Key: k\r\n"), wait_s=8)
        assert answer.startswith(b"HTTP/1.1 408"), (answer[:80], seconds)

    # -- memory -------------------------------------------------------------------------------------------------
    def memory__enrol_8_large_photos_peak(self) -> None:
        test = (REPO / "tests" / "serve" / "test_memory.py").read_text()
        script = test.split('PROBE = r"""', 1)[1].split('"""', 1)[0]  # the test's own measurement
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", script, str(DATA), str(self.work), "8", "4000"],
                              capture_output=True, text=True, timeout=240, env=env)
        assert done.returncode == 0, done.stderr[-300:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["increase_mib"] < 3.5 * 4000 * 4000 * 3 / 2**20, f"peak +{result['increase_mib']:.0f} MiB"

    def memory__pixel_budget_per_process(self) -> None:
        with self.client(max_pixels=1_000_000, pixel_budget=1_000_000) as client:
            budget = client.app.state.service.budget
            budget.wait_s = 0.2
            with budget.hold(999_000, "another request"):
                self.status(client.post("/v1/detect", files={"image": photo()}), 503, "pixels")

    # -- names --------------------------------------------------------------------------------------------------
    def _enrol(self, client, name, files=None, **kwargs):
        return client.post("/v1/identities", data={"name": name}, files=files or [("images", photo())], **kwargs)

    def names__invalid_utf8_is_422(self) -> None:
        body = (b"--zz\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nCaf\xe9\r\n--zz\r\nContent-Disposition:"
                b" form-data; name=\"images\"; filename=\"a.jpg\"\r\n\r\n" + photo()[1] + b"\r\n--zz--\r\n")
        with self.client() as client:
            self.status(client.post("/v1/identities", content=body,
                                    headers={"content-type": "multipart/form-data; boundary=zz"}), 422)

    def names__fullwidth_unknown_refused(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, "ｕｎｋｎｏｗｎ"), 422)

    def names__cyrillic_unknown_refused(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, "unkn\u043ewn"), 422)

    def names__dot_refused(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, "."), 422)

    def names__dotdot_refused(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, ".."), 422)

    def names__nfd_enrolled_nfc_deleted(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, "Zoe\u0301"), 201)
            self.status(client.delete("/v1/identities/Zo%C3%A9"), 200)

    def names__same_photo_two_names_409(self) -> None:
        with self.client() as client:
            self.status(self._enrol(client, "Colin"), 201)
            self.status(self._enrol(client, "Mallory"), 409, "Colin")

    # -- documented statuses, OpenAPI, files ---------------------------------------------------------------------
    def statuses__damaged_header_is_400(self) -> None:
        data = png(64, 64)
        with self.client() as client:
            damaged = data[:16] + b"\xff" * 16 + data[32:]  # the PNG signature stays, its header does not
            self.status(client.post("/v1/detect", files={"image": ("x.png", damaged)}), 400)

    def statuses__openapi_security_scheme(self) -> None:
        with self.client(api_key="k") as client:
            schemes = client.get("/openapi.json").json().get("components", {}).get("securitySchemes", {})
        assert any(s.get("name") == "X-API-Key" for s in schemes.values()), schemes

    def statuses__openapi_declares_error_statuses(self) -> None:
        with self.client() as client:
            schema = client.get("/openapi.json").json()
            answers = {"/v1/detect": client.post("/v1/detect", files={"image": ("t.txt", b"words")}).status_code,
                       "/v1/identities": self._enrol(client, ".").status_code}
        for path, code in answers.items():
            declared = schema["paths"][path]["post"]["responses"]
            assert str(code) in declared, (path, code, sorted(declared))

    def statuses__error_body_one_shape(self) -> None:
        with self.client() as client:
            body = client.post("/v1/identify?k=0", files={"image": photo()}).json()
        assert isinstance(body.get("detail"), str), body

    def statuses__docs_need_no_cdn(self) -> None:
        with self.client() as client:
            docs = client.get("/docs")
        assert docs.status_code == 404 or "cdn" not in docs.text.lower(), docs.text[:200]

    def statuses__read_only_mount_list_and_search(self) -> None:
        with self.tmpfs("4m") as disk:
            path = self.gallery(disk)
            with self.client(path) as client:
                self.status(self._enrol(client, "Colin"), 201)
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True, capture_output=True)
            with self.client(path) as client:
                self.status(client.get("/v1/identities"), 200, "Colin")
                self.status(client.post("/v1/identify", files={"image": photo("Colin_Powell", 2)}), 200, "Colin")
                self.status(self._enrol(client, "Bush", [("images", photo("George_W_Bush", 1))]), 503, "read-only")

    def statuses__failed_enroll_counts_committed(self) -> None:
        path = self.gallery()
        from marginface.cli import main

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["enroll", str(path), "--name", "Colin", str(lfw("Colin_Powell", 1))]) == 0
        folder = self.work / f"people{self.count}"
        for person, source in (("Ann", lfw("Tony_Blair", 1)), ("Bob", lfw("Colin_Powell", 1))):
            (folder / person).mkdir(parents=True)
            (folder / person / "1.jpg").write_bytes(source.read_bytes())
        assert "1 people" in self.cli("enroll", path, folder)

    def statuses__fifo_named(self) -> None:
        fifo = self.work / f"pipe{self.count}.jpg"
        os.mkfifo(fifo)
        assert "FIFO" in self.cli("verify", lfw("Colin_Powell", 1), fifo, *self.models(), "--threshold", "0.3")


def _attempt(method: Callable[[], None], box: list[BaseException | None]) -> None:
    """Run one probe, leaving None (passed) or its exception in `box`."""
    try:
        method()
        box.append(None)
    except BaseException as err:  # noqa: BLE001 - every failure is the probe's result
        box.append(err)


def run_probes(work: Path, only: str | None) -> list[dict]:
    """Every probe of `Probes` (or those whose name contains `only`), each with a 120 s limit."""
    import logging

    logging.disable(logging.CRITICAL)
    probes = Probes(work)
    results = []
    for name in sorted(n for n in dir(Probes) if "__" in n and not n.startswith("_")):
        if only and only not in name:
            continue
        family, probe = name.split("__", 1)
        outcome: dict = {"family": family, "probe": probe}
        box: list[BaseException | None] = []
        start = time.monotonic()
        thread = threading.Thread(target=_attempt, args=(getattr(probes, name), box), daemon=True)
        thread.start()
        thread.join(120)
        outcome["seconds"] = round(time.monotonic() - start, 2)
        if not box:
            outcome.update(result="failed", why="no answer within 120 s")
        elif box[0] is None:
            outcome["result"] = "passed"
        elif isinstance(box[0], Skip):
            outcome.update(result="skipped", why=str(box[0]))
        else:
            outcome.update(result="failed", why=f"{type(box[0]).__name__}: {' '.join(str(box[0]).split())[:240]}")
        results.append(outcome)
        print(f"{outcome['result']:>7}  {family}/{probe}  {outcome.get('why', '')}", file=sys.__stderr__, flush=True)
    return results


# -- the driver: before and after in fresh processes -----------------------------------------------------------
def source_tree(ref: str, into: Path) -> Path:
    """src/ of `ref`, unpacked from `git archive` (the repository is not changed)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, only: str | None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="probes-") as work:
        env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "OPENCV_LOG_LEVEL": "ERROR"}
        args = [sys.executable, __file__, "--run", "--work", work] + (["--only", only] if only else [])
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=3600,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)))
        lines = [line for line in done.stderr.splitlines() if line.lstrip().startswith(("passed", "failed", "skipped"))]
        print(f"{src}:", *lines, sep="\n  ", file=sys.stderr)
        results = Path(work) / "results.json"
        if not results.is_file():
            raise RuntimeError(f"the probes on {src} wrote no results (exit {done.returncode}): {done.stderr[-2000:]}")
        return json.loads(results.read_text())


def table(before: list[dict], after: list[dict]) -> tuple[str, dict]:
    """The per-family table (markdown) and its JSON form."""
    families: dict = {}
    for label, results in (("before", before), ("after", after)):
        for item in results:
            counts = families.setdefault(item["family"], {}).setdefault(
                label, {"tried": 0, "passed": 0, "failed": 0, "skipped": 0})
            counts["tried"] += 1
            counts[item["result"]] += 1
    lines = ["| family | probes | before: passed / failed / skipped | after: passed / failed / skipped |",
             "|---|---:|---|---|"]
    for family, counts in families.items():
        cells = [f"{c['passed']} / {c['failed']} / {c['skipped']}" for c in (counts.get("before", {}),
                                                                              counts.get("after", {})) if c]
        lines.append(f"| {family} | {counts['after']['tried']} | {' | '.join(cells)} |")
    return "\n".join(lines), families


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help=f"git ref measured as 'before' (default {BEFORE})")
    parser.add_argument("--out", default=str(REPO / "bench/results/serve/probes.json"))
    parser.add_argument("--only", help="run only the probes whose family__name contains this")
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:  # a probe may leave sys.stdout redirected (a `serve` that never returns): results go to a file
        results = run_probes(Path(args.work), args.only)
        (Path(args.work) / "results.json").write_text(json.dumps(results))
        os._exit(0)  # threads of probes that hung (serve that started) must not keep the process alive
    with tempfile.TemporaryDirectory(prefix="before-") as folder:
        before = measure(source_tree(args.before, Path(folder)), args.only)
    after = measure(REPO / "src", args.only)
    text, families = table(before, after)
    print(text)
    outcome = {"before": args.before, "after": "working tree", "families": families,
               "probes": [{**a, "before": b["result"], "before_why": b.get("why")}
                          for a, b in zip(after, before, strict=True)]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
