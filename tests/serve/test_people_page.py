"""The page's People view in a real headless Chromium (issue 18), over real LFW photos and the real models:
clusters made through the library (scan with thumbnails, then apply_clustering with chosen labels), seen as
thumbnail grids; take a wrong face out, name the cluster, merge two clusters by ticking them and two by drag,
name that one and put the face taken out into it from the "Not in anyone yet" grid, delete it, add a photo from
the page; then identify a new photo of the named person by that name."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from marginface.infer.gallery import Gallery
from marginface.infer.people import People
from marginface.infer.people_scan import add_photos
from marginface.serve import create_app

SCREENSHOT = Path(__file__).resolve().parents[2] / "bench" / "results" / "serve" / "people.png"
KEY = "people-page-key"
COLIN, BUSH = "Colin_Powell", "George_W_Bush"


@pytest.fixture
def clusters(gallery_path: Path, recognizer, lfw) -> dict:
    """Colin (photos 1-3) in one cluster with a wrongly placed Bush face; Bush 2 and 3 in two more clusters, all
    with thumbnails; Bush 4 stored without one, in a cluster of its own. Returns face ids by photo."""
    with Gallery.open(gallery_path) as gallery:
        people = People(gallery)
        kept = [lfw(COLIN, 1), lfw(COLIN, 2), lfw(COLIN, 3), lfw(BUSH, 1), lfw(BUSH, 2), lfw(BUSH, 3)]
        ids = add_photos(people, recognizer, kept, keep_thumbnails=True).face_ids
        ids += add_photos(people, recognizer, [lfw(BUSH, 4)]).face_ids
        assert len(ids) == 7  # one face per photo
        people.apply_clustering(ids, [0, 0, 0, 0, 1, 2, 3])
        refs = [people.faces([f])[0].person.ref for f in ids]
    return {"ids": ids, "colin": refs[0], "bush2": refs[4], "bush3": refs[5], "bush4": refs[6]}


@pytest.mark.slow
def test_name_a_cluster_from_the_page_then_identify_by_that_name(gallery_path, recognizer, lfw, clusters,
                                                                 open_page):
    app = create_app(gallery_path, api_key=KEY, recognizer=recognizer)
    ids = clusters["ids"]
    with open_page(app, height=900) as (page, expect):
        page.fill("#api-key", KEY)
        page.click("#key-form button")
        expect(page.locator("#service-info")).to_contain_text("0 people")

        page.click("#tab-people")
        expect(page.locator("#view-identify")).to_be_hidden()
        rows = page.locator("#person-list li")
        expect(rows).to_have_count(4)
        colin_row = page.locator(f"#person-list li[data-ref='{clusters['colin']}']")
        expect(colin_row).to_contain_text(f"unnamed {clusters['colin']}")
        expect(colin_row).to_contain_text("4 faces")
        expect(page.locator("#people-counts")).to_contain_text("4 unnamed clusters, 7 faces from 7 photos")

        # the cluster as a grid of its thumbnails, fetched with the key
        colin_row.locator(".person-open").click()
        tiles = page.locator("#face-grid .face-tile")
        expect(tiles).to_have_count(4)
        expect(page.locator("#thumb-note")).to_be_hidden()
        page.wait_for_function("() => Array.from(document.querySelectorAll('#face-grid img'))"
                               ".every((img) => img.complete && img.naturalWidth === 112)")

        # the Bush face is not Colin: select it, take it out
        expect(page.locator("#not-button")).to_be_disabled()
        page.click(f"#face-grid .face-tile[data-face='{ids[3]}']")
        page.click("#not-button")
        expect(page.locator("#people-status")).to_contain_text(f"1 face taken out of {clusters['colin']}")
        expect(tiles).to_have_count(3)
        expect(page.locator("#people-counts")).to_contain_text("1 face not in anyone yet")
        # ... and is listed in no one, with its thumbnail
        loose = page.locator("#unassigned-grid .face-tile")
        expect(page.locator("#unassigned-title")).to_have_text("Not in anyone yet · 1 face")
        expect(loose).to_have_count(1)
        expect(page.locator(f"#unassigned-grid .face-tile[data-face='{ids[3]}'] img")).to_have_js_property(
            "naturalWidth", 112)
        expect(page.locator("#unassigned-note")).to_be_hidden()

        # name the cluster
        page.fill("#person-name", "Colin Powell")
        page.click("#name-button")
        expect(page.locator("#people-status")).to_contain_text(f"{clusters['colin']} is now Colin Powell")
        expect(page.locator("#person-list li[data-ref='Colin Powell']")).to_contain_text("3 faces")
        expect(page.locator("#person-title")).to_contain_text("Colin Powell · 3 faces · 3 templates")
        expect(page.locator("#people-list li[data-name='Colin Powell']")).to_contain_text("3 templates")
        if os.environ.get("MARGINFACE_KEEP_SCREENSHOT"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)

        # merge two clusters by ticking them, then drag the third onto the result
        page.check(f"#person-list li[data-ref='{clusters['bush2']}'] .tick")
        expect(page.locator("#merge-button")).to_be_disabled()
        page.check(f"#person-list li[data-ref='{clusters['bush3']}'] .tick")
        page.click("#merge-button")
        expect(page.locator("#people-status")).to_contain_text(f"into {clusters['bush2']}")
        expect(rows).to_have_count(3)
        page.locator(f"#person-list li[data-ref='{clusters['bush4']}']").drag_to(
            page.locator(f"#person-list li[data-ref='{clusters['bush2']}']"))
        expect(page.locator("#people-status")).to_contain_text(
            f"merged {clusters['bush2']} and {clusters['bush4']} into {clusters['bush2']}")
        expect(page.locator(f"#person-list li[data-ref='{clusters['bush2']}']")).to_contain_text("3 faces")
        # one of its faces was stored without a thumbnail: the page says so
        page.locator(f"#person-list li[data-ref='{clusters['bush2']}'] .person-open").click()
        expect(page.locator("#thumb-note")).to_contain_text("Thumbnails are not kept for 1 face")
        expect(page.locator("#thumb-note")).to_contain_text("George_W_Bush_0004.jpg")
        expect(page.locator("#face-grid .no-thumb")).to_have_count(1)

        # name it, then put the face taken out of Colin into it from the grid of faces in no one: not into Colin
        # (marked 'not' him: the refusal is shown and nothing moves), into George W Bush it goes
        page.fill("#person-name", "George W Bush")
        page.click("#name-button")
        expect(page.locator("#person-title")).to_contain_text("George W Bush · 3 faces")
        expect(page.locator("#place-button")).to_be_disabled()
        page.click(f"#unassigned-grid .face-tile[data-face='{ids[3]}']")
        page.select_option("#place-into", "Colin Powell")
        page.click("#place-button")
        expect(page.locator("#people-status")).to_contain_text("409: ")
        expect(page.locator("#people-status")).to_contain_text("was marked 'not Colin Powell'")
        expect(loose).to_have_count(1)
        expect(page.locator("#unassigned-grid .face-tile.selected")).to_have_count(1)  # still chosen
        page.select_option("#place-into", "George W Bush")
        page.click("#place-button")
        expect(page.locator("#people-status")).to_contain_text("1 face put into George W Bush")
        expect(page.locator("#unassigned-section")).to_be_hidden()
        expect(page.locator("#person-title")).to_contain_text("George W Bush · 4 faces")
        expect(page.locator("#people-counts")).not_to_contain_text("not in anyone yet")
        bush = page.request.get(page.url + "v1/people/" + quote("George W Bush", safe=""),
                                headers={"X-API-Key": KEY}).json()
        placed = next(f for f in bush["face_records"] if f["id"] == ids[3])
        assert placed["person"] == "George W Bush" and placed["assigned_by"] == "user"
        assert page.request.get(page.url + "v1/faces/unassigned", headers={"X-API-Key": KEY}).json()["total"] == 0

        # the face without a thumbnail, taken out, is in no one: the page says thumbnails are off and how
        page.click(f"#face-grid .face-tile[data-face='{ids[6]}']")
        page.click("#not-button")
        expect(loose).to_have_count(1)
        expect(page.locator("#unassigned-grid .no-thumb")).to_have_count(1)
        expect(page.locator("#unassigned-note")).to_contain_text("thumbnails are off; start the service with "
                                                                 "--keep-thumbnails")

        # delete the person
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#delete-person")
        expect(page.locator("#people-status")).to_contain_text("deleted George W Bush: 3 faces")
        expect(rows).to_have_count(1)

        # a photo added from the page is placed by the gallery's clustering (the auto model ships a cut):
        # it and the face nobody had placed yet end in a cluster, none is left unassigned
        page.set_input_files("#faces-files", str(lfw(BUSH, 5)))
        page.click("#faces-button")
        expect(page.locator("#people-status")).to_contain_text("added 1 face from 1 photo")
        expect(page.locator("#people-counts")).to_contain_text("1 unnamed cluster")
        expect(page.locator("#people-counts")).not_to_contain_text("not in anyone yet")

        # a new photo of Colin is identified by the name given on the page
        page.click("#tab-identify")
        page.set_input_files("#photo-input", str(lfw(COLIN, 4)))
        expect(page.locator("#identify-status")).to_contain_text("1 face: Colin Powell")
