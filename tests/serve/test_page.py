"""The web page in a real headless Chromium (Debian's package via Playwright's executable_path): give the key,
enrol a person from the page, identify a new photo of them among strangers, see the names drawn and listed,
delete them, drop a photo on the page and enrol the photo shown."""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import pytest

from marginface.serve import create_app

SCREENSHOT_COPY = Path(__file__).resolve().parents[2] / "bench" / "results" / "serve" / "page.png"
KEY = "page-test-key"
KNOWN_GREEN = (0x19, 0xA3, 0x5B)  # app.js colour of a known face's box


@pytest.mark.slow
def test_enrol_and_identify_from_the_page(gallery_path, recognizer, lfw, tmp_path, open_page):
    app = create_app(gallery_path, api_key=KEY, recognizer=recognizer)
    with open_page(app, height=820) as (page, expect):
        expect(page.locator("#key-form")).to_be_visible()  # the service has a key: the page asks for it
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        expect(page.locator("#service-info")).to_contain_text("0 people")
        expect(page.locator("#people-list")).to_contain_text("nobody enrolled yet")

        page.fill("#enrol-name", "Colin Powell")
        page.set_input_files("#enrol-files", [str(lfw("Colin_Powell", 1)), str(lfw("Colin_Powell", 2))])
        page.click("#enrol-button")
        expect(page.locator("#enrol-status")).to_contain_text("enrolled Colin Powell: 2 new templates")
        expect(page.locator("#people-list li[data-name='Colin Powell']")).to_contain_text("2 templates")

        # A new photo of him with two other people: he is named, main face first; they are unknown.
        page.set_input_files("#photo-input", str(lfw("Colin_Powell", 10)))
        expect(page.locator("#identify-status")).to_contain_text("3 faces: Colin Powell, unknown, unknown")
        rows = page.locator("#faces-table tbody tr")
        expect(rows).to_have_count(3)
        expect(rows.first).to_contain_text("Colin Powell")
        expect(rows.first).to_contain_text("fixed")  # the threshold's source is shown with the decision

        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("MARGINFACE_KEEP_SCREENSHOT"):
            SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT_COPY)

        # The main face's box is drawn on the canvas in the "known" colour (its bottom edge, mid-way).
        box = page.evaluate("""async (key) => {
            const form = new FormData();
            form.append('image', document.getElementById('photo-input').files[0]);
            const r = await fetch('v1/identify', {method: 'POST', body: form, headers: {'X-API-Key': key}});
            return (await r.json()).faces[0].box; }""", KEY)
        pixel = page.evaluate("""([x, y]) => Array.from(document.getElementById('photo-canvas')
            .getContext('2d').getImageData(x, y, 1, 1).data.slice(0, 3))""",
                              [int(box[0] + box[2] / 2), int(box[1] + box[3])])
        assert max(abs(a - b) for a, b in zip(pixel, KNOWN_GREEN, strict=True)) < 40, pixel

        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#people-list li[data-name='Colin Powell'] button.delete")
        expect(page.locator("#people-list")).to_contain_text("nobody enrolled yet")

        # Drop a photo on the page: he is unknown now; enrol the photo shown (no files chosen) and he is back.
        photo = lfw("Colin_Powell", 3)
        page.evaluate("""([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: 'image/jpeg'}));
            document.getElementById('drop-zone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true})); }""",
                      [photo.name, base64.b64encode(photo.read_bytes()).decode("ascii")])
        expect(page.locator("#identify-status")).to_contain_text("1 face: unknown")
        page.fill("#enrol-name", "Colin")
        page.click("#enrol-button")
        expect(page.locator("#enrol-status")).to_contain_text("enrolled Colin: 1 new template")
        expect(page.locator("#identify-status")).to_contain_text("1 face: Colin")
