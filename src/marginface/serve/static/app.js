// marginface web page: identify faces in a photo, enrol people, list and delete them. Plain JS, no build step.
"use strict";

const state = { key: sessionStorage.getItem("marginface-key") || "", photo: null, image: null };
const $ = (id) => document.getElementById(id);

function headers() {
  return state.key ? { "X-API-Key": state.key } : {};
}

async function api(method, path, body) {
  const response = await fetch(path, { method, body, headers: headers() });
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
    if (await loadInfo()) await loadPeople();
  });
}

wire();
loadInfo().then((ok) => { if (ok) loadPeople(); });
