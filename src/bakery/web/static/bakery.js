// Bakery's dashboard: the few things a page does live. Every page reads whole without
// this file; it adds a Pi's timeline as it happens (server-sent events) and an upload's
// progress. Text from the server goes in as text (textContent), never as HTML.
"use strict";

function eventTime(event) {
  if (event.since_power_on !== null && event.since_power_on !== undefined) {
    return "+" + event.since_power_on.toFixed(2) + " s";
  }
  return event.at.replace("T", " ");
}

function addTimelineRow(body, event) {
  if (body.querySelector('tr[data-id="' + event.id + '"]')) {
    return;
  }
  const row = document.createElement("tr");
  row.dataset.id = String(event.id);
  row.className = "kind-" + event.kind + " fresh";
  for (const text of [eventTime(event), event.kind, event.message]) {
    const cell = document.createElement("td");
    cell.textContent = text;
    row.appendChild(cell);
  }
  body.appendChild(row);
}

function updateHead(head, pi) {
  // A new state or bake changes what can be done: the page is drawn again for it.
  if (pi.state !== head.dataset.state || (pi.bake_id || "") !== head.dataset.bakeId) {
    window.location.reload();
    return;
  }
  head.querySelector('[data-field="boot"]').textContent = pi.boot || "–";
  head.querySelector('[data-field="power_state"]').textContent = pi.power_state;
}

function followTimeline(table) {
  if (!window.EventSource) {
    return;
  }
  const body = table.querySelector("tbody");
  const head = document.getElementById("pi-head");
  const source = new EventSource(table.dataset.stream + "?after=" + table.dataset.after);
  source.addEventListener("timeline", (message) => addTimelineRow(body, JSON.parse(message.data)));
  source.addEventListener("pi", (message) => updateHead(head, JSON.parse(message.data)));
  table.dataset.live = "yes";
}

function upload(form) {
  const name = form.querySelector("#upload-name").value.trim();
  const file = form.querySelector("#upload-file").files[0];
  const progress = form.querySelector("#upload-progress");
  const status = form.querySelector("#upload-status");
  if (!name || !file) {
    status.textContent = "a name and an image file, please";
    return;
  }
  const replace = form.querySelector("#upload-replace").checked ? "?replace=1" : "";
  const request = new XMLHttpRequest();
  request.open("PUT", form.dataset.url.replace("NAME", encodeURIComponent(name)) + replace);
  request.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
  request.setRequestHeader("Content-Type", "application/octet-stream");
  request.upload.onprogress = (event) => {
    if (event.lengthComputable) {
      progress.value = Math.floor((100 * event.loaded) / event.total);
      status.textContent = "uploading " + progress.value + " %";
    }
  };
  request.upload.onload = () => {
    progress.value = 100;
    status.textContent = "uploaded; extracting on the server…";
  };
  request.onload = () => {
    let answer = {};
    try {
      answer = JSON.parse(request.responseText);
    } catch (error) {
      answer = {};
    }
    if (request.status === 201) {
      status.textContent = "bakeform " + answer.name + " is ready";
      window.location.reload();
    } else {
      const message = answer.error ? answer.error.message : request.statusText;
      status.textContent = "refused (" + request.status + "): " + message;
    }
  };
  request.onerror = () => {
    status.textContent = "the upload was cut off";
  };
  request.send(file);
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("timeline");
  if (table) {
    followTimeline(table);
  }
  const form = document.getElementById("upload");
  if (form) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      upload(form);
    });
  }
});
