// marginface web page: identify faces in a photo, enrol people, list and delete them; the People view names,
// merges and cleans up the unnamed clusters of scanned faces and places the faces in no one. Plain JS, no build step.
"use strict";

const state = {
  key: sessionStorage.getItem("marginface-key") || "", photo: null, image: null,
  current: null, ticked: new Set(), faces: new Set(), thumbs: [],  // People view: the open person
  loose: new Set(), looseThumbs: [], looseNext: null, looseShown: 0,  // faces in no one
};
const LOOSE_PAGE = 100;  // faces in no one fetched per page
const $ = (id) => document.getElementById(id);

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

async function api(method, path, body) {
  const options = { method, body, headers: headers() };
  if (body && !(body instanceof FormData)) {  // a plain object: sent as JSON
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  let payload = null;
  try { payload = await response.json(); } catch (_) { payload = null; }
  if (response.status === 401) {
    $("key-form").hidden = false;
    $("api-key").focus();
  }
  if (!response.ok) {
    const detail = payload && payload.detail ? payload.detail : response.statusText;
    const text = typeof detail === "string" ? detail : JSON.stringify(detail);
    const error = new Error(`${response.status}: ${text}`);
    error.status = response.status;
    throw error;
  }
  return payload;
}

function setStatus(id, text, kind) {
  const node = $(id);
  node.textContent = text;
  node.className = "status" + (kind ? " " + kind : "");
}

function fmt(value, digits = 3) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function thresholdText(t) {
  return t ? `${fmt(t.value)} (${t.source})` : "–";
}

async function loadInfo() {
  try {
    const info = await api("GET", "healthz");
    $("key-form").hidden = true;
    const t = info.threshold;
    $("service-info").textContent =
      `${info.identities} people, ${info.templates} templates · threshold ${thresholdText(t)}`;
    return true;
  } catch (err) {
    $("service-info").textContent = err.status === 401 ? "this service needs an API key" : String(err.message);
    return false;
  }
}

async function loadPeople() {
  const list = $("people-list");
  try {
    const data = await api("GET", "v1/identities");
    list.replaceChildren();
    for (const person of data.identities) {
      const item = document.createElement("li");
      item.dataset.name = person.name;
      const label = document.createElement("span");
      label.className = "person-name";
      label.textContent = `${person.name} (${person.templates} template${person.templates === 1 ? "" : "s"})`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "small delete";
      remove.textContent = "delete";
      remove.addEventListener("click", () => deletePerson(person.name));
      item.append(label, remove);
      list.append(item);
    }
    if (!data.identities.length) {
      const empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = "nobody enrolled yet";
      list.append(empty);
    }
  } catch (err) {
    list.replaceChildren();
  }
}

async function deletePerson(name) {
  if (!window.confirm(`Delete ${name} and all their templates?`)) return;
  try {
    await api("DELETE", "v1/identities/" + encodeURIComponent(name));
    setStatus("enrol-status", `deleted ${name}`, "ok");
  } catch (err) {
    setStatus("enrol-status", err.message, "error");
  }
  await Promise.all([loadPeople(), loadInfo()]);
}

function drawPhoto(faces) {
  const canvas = $("photo-canvas");
  const image = state.image;
  if (!image) return;
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(image, 0, 0);
  const line = Math.max(2, Math.round(Math.min(canvas.width, canvas.height) / 160));
  const fontSize = Math.max(10, Math.round(Math.min(canvas.width, canvas.height) / 24));
  ctx.font = `${fontSize}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  // Drawn last to first, so the main face's box and label lie on top of the others.
  (faces || []).map((face, index) => [face, index]).reverse().forEach(([face, index]) => {
    const [x, y, w, h] = face.box;
    const known = face.name && face.name !== "unknown";
    const colour = known ? "#19a35b" : "#e0641b";
    ctx.lineWidth = line;
    ctx.strokeStyle = colour;
    ctx.strokeRect(x, y, w, h);
    const label = `${index === 0 ? "" : index + 1 + ". "}${face.name} ${fmt(face.score, 2)}`;
    const width = ctx.measureText(label).width + 8;
    const top = Math.max(fontSize + 4, y);
    const left = Math.max(0, Math.min(x - line / 2, canvas.width - width));  // keep the label inside the photo
    ctx.fillStyle = colour;
    ctx.fillRect(left, top - fontSize - 4, width, fontSize + 4);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, left + 4, top - 2);
  });
}

function showFaces(faces) {
  const table = $("faces-table");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  faces.forEach((face, index) => {
    const row = document.createElement("tr");
    row.className = "face-row";
    const cells = [String(index + 1), face.name, fmt(face.score), thresholdText(face.threshold),
      fmt(face.detection_score, 2)];
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    body.append(row);
  });
  table.hidden = faces.length === 0;
}

async function identify() {
  if (!state.photo) return;
  setStatus("identify-status", "identifying…");
  const form = new FormData();
  form.append("image", state.photo, state.photo.name || "photo");
  try {
    const result = await api("POST", "v1/identify", form);
    drawPhoto(result.faces);
    showFaces(result.faces);
    const names = result.faces.map((f) => f.name).join(", ");
    setStatus("identify-status", `${result.faces.length} face${result.faces.length === 1 ? "" : "s"}: ${names}`, "ok");
  } catch (err) {
    drawPhoto([]);
    showFaces([]);
    setStatus("identify-status", err.message, "error");
  }
}

function choosePhoto(file) {
  if (!file) return;
  state.photo = file;
  const url = URL.createObjectURL(file);
  const image = new Image();
  image.onload = () => {
    state.image = image;
    drawPhoto([]);
    identify();
  };
  image.onerror = () => {
    // The browser cannot show it; the service still says what is wrong with it.
    state.image = null;
    identify();
  };
  image.src = url;
}

async function enrol(event) {
  event.preventDefault();
  const name = $("enrol-name").value.trim();
  const files = Array.from($("enrol-files").files);
  if (!files.length && state.photo) files.push(state.photo);
  if (!name) { setStatus("enrol-status", "give a name", "error"); return; }
  if (!files.length) { setStatus("enrol-status", "choose one or more photos (or a photo above)", "error"); return; }
  const form = new FormData();
  form.append("name", name);
  for (const file of files) form.append("images", file, file.name || "photo");
  setStatus("enrol-status", "enrolling…");
  try {
    const result = await api("POST", "v1/identities", form);
    setStatus("enrol-status", `enrolled ${result.name}: ${result.added} new template${result.added === 1 ? "" : "s"}` +
      (result.duplicates ? `, ${result.duplicates} already enrolled` : "") +
      (result.skipped.length ? `; skipped ${result.skipped.map((s) => `${s.photo} (${s.reason})`).join(", ")}` : ""),
      result.skipped.length ? "error" : "ok");
    $("enrol-files").value = "";
    await Promise.all([loadPeople(), loadInfo()]);
    if (state.photo) identify();
  } catch (err) {
    setStatus("enrol-status", err.message, "error");
  }
}

function wire() {
  $("photo-input").addEventListener("change", (e) => choosePhoto(e.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) choosePhoto(e.dataTransfer.files[0]);
  });
  $("enrol-form").addEventListener("submit", enrol);
  $("refresh-people").addEventListener("click", loadPeople);
  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    state.key = $("api-key").value;
    sessionStorage.setItem("marginface-key", state.key);
    if (await loadInfo()) {
      await loadPeople();
      if (!$("view-people").hidden) await loadPeopleView();
    }
  });
}

// -- People view: named people and unnamed clusters of scanned faces ------------------------------------------

const personPath = (ref) => "v1/people/" + encodeURIComponent(ref);  // '@12' and names with '/' alike
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function showView(id) {
  for (const tab of document.querySelectorAll("#views button")) {
    const on = tab.dataset.view === id;
    tab.setAttribute("aria-selected", String(on));
    $(tab.dataset.view).hidden = !on;
  }
  if (id === "view-people") loadPeopleView();
}

function personLabel(person) {
  return person.kind === "named" ? person.name : `unnamed ${person.ref}`;
}

async function loadPeopleView() {
  let data;
  try {
    data = await api("GET", "v1/people");
  } catch (err) {
    setStatus("people-status", err.message, "error");
    return;
  }
  const c = data.counts;
  $("people-counts").textContent = `${plural(c.named, "named person")}, ${plural(c.clusters, "unnamed cluster")}, ` +
    `${plural(c.faces, "face")} from ${plural(c.photos, "photo")}` +
    (c.unassigned ? ` · ${plural(c.unassigned, "face")} not in anyone yet (listed below: place them, or let a ` +
      "clustering run group them)" : "") +
    (c.without_embedding ? ` · ${plural(c.without_embedding, "face")} without an embedding (the photo was gone at ` +
      "the last reembed: out of search and clustering)" : "");
  const refs = new Set(data.people.map((p) => p.ref));
  for (const ref of Array.from(state.ticked)) if (!refs.has(ref)) state.ticked.delete(ref);
  const list = $("person-list");
  list.replaceChildren();
  for (const person of data.people) list.append(personRow(person));
  if (!data.people.length) {
    const empty = document.createElement("li");
    empty.className = "muted";
    empty.textContent = "no people yet: add photos of people, then let a clustering run group them";
    list.append(empty);
  }
  updateMerge();
  fillPlaceInto(data.people);
  await Promise.all([state.current && refs.has(state.current) ? showPerson(state.current) : closePerson(),
    loadUnassigned(false)]);
}

function personRow(person) {
  const item = document.createElement("li");
  item.dataset.ref = person.ref;
  item.className = person.kind + (person.ref === state.current ? " current" : "");
  item.draggable = true;
  const tick = document.createElement("input");
  tick.type = "checkbox";
  tick.className = "tick";
  tick.title = "select for merging";
  tick.checked = state.ticked.has(person.ref);
  tick.addEventListener("change", () => {
    if (tick.checked) state.ticked.add(person.ref); else state.ticked.delete(person.ref);
    updateMerge();
  });
  const open = document.createElement("button");
  open.type = "button";
  open.className = "person-open";
  open.textContent = personLabel(person);
  open.addEventListener("click", () => showPerson(person.ref));
  const count = document.createElement("span");
  count.className = "muted face-count";
  count.textContent = plural(person.faces, "face");
  item.append(tick, open, count);
  item.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/plain", person.ref));
  item.addEventListener("dragover", (e) => { e.preventDefault(); item.classList.add("over"); });
  item.addEventListener("dragleave", () => item.classList.remove("over"));
  item.addEventListener("drop", (e) => {
    e.preventDefault();
    item.classList.remove("over");
    const dragged = e.dataTransfer.getData("text/plain");
    if (dragged && dragged !== person.ref) merge(person.ref, dragged);  // the dragged one goes into this one
  });
  return item;
}

function updateMerge() {
  $("merge-button").disabled = state.ticked.size !== 2;
}

async function merge(a, b) {
  try {
    const result = await api("POST", "v1/people:merge", { a, b });
    state.ticked.clear();
    state.current = result.person.ref;
    setStatus("people-status", `merged ${a} and ${b} into ${result.person.ref}`, "ok");
  } catch (err) {
    setStatus("people-status", err.message, "error");
  }
  await loadPeopleView();
}

function closePerson() {
  state.current = null;
  state.faces.clear();
  $("person-detail").hidden = true;
  for (const url of state.thumbs) URL.revokeObjectURL(url);
  state.thumbs = [];
}

async function showPerson(ref) {
  let person;
  try {
    person = await api("GET", personPath(ref));
  } catch (err) {
    setStatus("people-status", err.message, "error");
    return;
  }
  const changed = state.current !== ref;
  closePerson();
  state.current = ref;
  if (changed) $("person-name").value = person.kind === "named" ? person.name : "";
  for (const row of document.querySelectorAll("#person-list li")) {
    row.classList.toggle("current", row.dataset.ref === ref);
  }
  $("person-title").textContent = `${personLabel(person)} · ${plural(person.faces, "face")}` +
    (person.kind === "named" ? ` · ${plural(person.templates, "template")}` : "");
  $("name-button").textContent = person.kind === "named" ? "Rename" : "Name";
  const grid = $("face-grid");
  grid.replaceChildren();
  for (const face of person.face_records) grid.append(faceTile(face, state.faces, updateFaceButtons, state.thumbs));
  const kept = person.face_records.filter((f) => f.has_thumbnail).length;
  const note = $("thumb-note");
  note.hidden = kept === person.face_records.length;
  const photos = Array.from(new Set(person.face_records.filter((f) => !f.has_thumbnail).map((f) => photoName(f))));
  note.textContent = `Thumbnails are not kept for ${plural(person.face_records.length - kept, "face")} ` +
    `(start the service with --keep-thumbnails to keep them for new photos); photos: ${photos.join(", ")}`;
  updateFaceButtons();
  $("person-detail").hidden = false;
}

function photoName(face) {
  return face.photo_path.replace(/^upload:/, "").split(/[\\/]/).pop();
}

function faceTile(face, chosen, changed, thumbs) {
  // one face as a tile that toggles its id in the set `chosen`; its thumbnail's blob URL goes into `thumbs`
  const tile = document.createElement("div");
  tile.className = "face-tile" + (face.assigned_by === "user" ? " user" : "") + (chosen.has(face.id) ? " selected" : "");
  tile.dataset.face = String(face.id);
  tile.tabIndex = 0;
  tile.title = `${face.photo_path} · face ${face.face_index + 1} · detection ${fmt(face.detection_score, 2)} · ` +
    (face.person ? `placed by ${face.assigned_by}` : "in no one yet");
  if (face.has_thumbnail) {
    const img = document.createElement("img");
    img.alt = `face ${face.id}`;
    tile.append(img);
    loadThumbnail(face.id, img, thumbs);
  } else {
    const box = document.createElement("div");
    box.className = "no-thumb";
    box.textContent = "no thumbnail";
    tile.append(box);
  }
  const caption = document.createElement("div");
  caption.textContent = `#${face.id} · ${photoName(face)}`;
  tile.append(caption);
  const toggle = () => {
    if (chosen.has(face.id)) chosen.delete(face.id); else chosen.add(face.id);
    tile.classList.toggle("selected", chosen.has(face.id));
    changed();
  };
  tile.addEventListener("click", toggle);
  tile.addEventListener("keydown", (e) => { if (e.key === " " || e.key === "Enter") { e.preventDefault(); toggle(); } });
  return tile;
}

async function loadThumbnail(id, img, thumbs) {
  // fetched with the key (an <img src> cannot send it), shown from a blob URL revoked when its grid is redrawn
  try {
    const response = await fetch(`v1/faces/${id}/thumbnail`, { headers: headers() });
    if (!response.ok) throw new Error(String(response.status));
    const url = URL.createObjectURL(await response.blob());
    thumbs.push(url);
    img.src = url;
  } catch (err) {
    img.alt = `face ${id}: no thumbnail (${err.message})`;
  }
}

function updateFaceButtons() {
  $("not-button").disabled = $("split-button").disabled = state.faces.size === 0;
}

async function change(run, done) {
  try {
    const text = done(await run());
    setStatus("people-status", text, "ok");
  } catch (err) {
    setStatus("people-status", err.message, "error");
  }
  await Promise.all([loadPeopleView(), loadPeople(), loadInfo()]);
}

async function namePerson(event) {
  event.preventDefault();
  const ref = state.current;
  const name = $("person-name").value.trim();
  if (!ref || !name) return;
  await change(() => api("POST", "v1/people:name", { ref, name }), (result) => {
    state.current = result.person.ref;
    return `${ref} is now ${result.person.ref}`;
  });
}

async function notThisPerson() {
  const ref = state.current;
  const faces = Array.from(state.faces);
  await change(() => api("POST", "v1/people:not", { ref, faces }),
    (result) => `${plural(result.taken_out.length, "face")} taken out of ${result.person.ref}; ` +
      "no clustering run puts them back");
}

async function splitFaces() {
  const faces = Array.from(state.faces);
  await change(() => api("POST", "v1/people:split", { faces }), (result) => {
    state.current = result.person.ref;
    return `${plural(faces.length, "face")} moved to ${result.person.ref}`;
  });
}

async function deleteCurrent() {
  const ref = state.current;
  if (!ref || !window.confirm(`Delete ${ref} with all their faces and templates?`)) return;
  await change(() => api("DELETE", personPath(ref)), (result) => {
    closePerson();
    return `deleted ${result.person}: ${plural(result.faces, "face")}, ${plural(result.templates, "template")}`;
  });
}

async function addFaces(event) {
  event.preventDefault();
  const files = Array.from($("faces-files").files);
  if (!files.length) { setStatus("people-status", "choose one or more photos", "error"); return; }
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name || "photo");
  setStatus("people-status", "adding…");
  await change(() => api("POST", "v1/faces", form), (result) => {
    $("faces-files").value = "";
    return `added ${plural(result.faces, "face")} from ${plural(result.photos.length, "photo")}` +
      (result.known ? `; ${plural(result.known, "photo")} added before` : "") +
      (result.without_face.length ? `; no face in ${result.without_face.join(", ")}` : "") +
      (result.clustering ? "" : "; they are in no one until a clustering run places them");
  });
}

// -- the faces in no one: a paged grid, placed into a person or a new cluster with people:split ---------------

function fillPlaceInto(people) {
  const select = $("place-into");
  const before = select.value;
  const options = [["", "a new person"], ...people.map((p) => [p.ref, personLabel(p)])];
  select.replaceChildren(...options.map(([value, label]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    return option;
  }));
  if (options.some(([value]) => value === before)) select.value = before;
}

async function loadUnassigned(more) {
  let data;
  try {
    data = await api("GET", `v1/faces/unassigned?limit=${LOOSE_PAGE}` + (more ? `&after=${state.looseNext}` : ""));
  } catch (err) {
    setStatus("people-status", err.message, "error");
    return;
  }
  const grid = $("unassigned-grid");
  if (!more) {
    grid.replaceChildren();
    for (const url of state.looseThumbs) URL.revokeObjectURL(url);
    state.looseThumbs = [];
    state.looseShown = 0;
    const listed = new Set(data.faces.map((f) => f.id));
    for (const id of Array.from(state.loose)) if (!listed.has(id)) state.loose.delete(id);
  }
  for (const face of data.faces) grid.append(faceTile(face, state.loose, updatePlace, state.looseThumbs));
  state.looseShown += data.faces.length;
  state.looseNext = data.next_after;
  $("unassigned-title").textContent = `Not in anyone yet · ${plural(data.total, "face")}`;
  const moreButton = $("unassigned-more");
  moreButton.hidden = data.next_after === null;
  moreButton.textContent = `show more (${data.total - state.looseShown} left)`;
  const bare = grid.querySelectorAll(".no-thumb").length;
  const notes = [];
  if (bare) {
    notes.push(`${plural(bare, "face")} without a thumbnail: ` + (data.thumbnails_kept
      ? "stored before this service kept them, or scanned without marginface cluster --keep-thumbnails"
      : "thumbnails are off; start the service with --keep-thumbnails to keep them for photos added here " +
        "(marginface cluster --keep-thumbnails for scanned photos)"));
  }
  if (data.without_embedding) {
    notes.push(`not listed: ${plural(data.without_embedding, "face")} without an embedding (the photo was gone at ` +
      "the last reembed)");
  }
  const note = $("unassigned-note");
  note.textContent = notes.join("; ");
  note.hidden = !notes.length;
  $("unassigned-section").hidden = !data.total && !data.without_embedding;
  updatePlace();
}

function updatePlace() {
  $("place-button").disabled = state.loose.size === 0;
}

async function placeFaces(event) {
  event.preventDefault();
  const faces = Array.from(state.loose);
  if (!faces.length) return;
  const into = $("place-into").value || null;
  await change(() => api("POST", "v1/people:split", { faces, into }), (result) => {
    for (const id of faces) state.loose.delete(id);
    return `${plural(faces.length, "face")} put into ${result.person.ref}`;
  });
}

function wirePeople() {
  for (const tab of document.querySelectorAll("#views button")) {
    tab.addEventListener("click", () => showView(tab.dataset.view));
  }
  $("merge-button").addEventListener("click", () => {
    const [a, b] = Array.from(state.ticked);
    merge(a, b);
  });
  $("name-form").addEventListener("submit", namePerson);
  $("delete-person").addEventListener("click", deleteCurrent);
  $("not-button").addEventListener("click", notThisPerson);
  $("split-button").addEventListener("click", splitFaces);
  $("faces-form").addEventListener("submit", addFaces);
  $("place-form").addEventListener("submit", placeFaces);
  $("unassigned-more").addEventListener("click", () => loadUnassigned(true));
}

wire();
wirePeople();
loadInfo().then((ok) => { if (ok) loadPeople(); });
