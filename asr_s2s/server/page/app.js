// The page of `asr-s2s serve`: upload (or record) a file, show each segment as the server decodes it
// (POST /v1/audio/transcriptions with stream=true: server-sent events), offer txt/srt/vtt downloads.
"use strict";

const $ = (id) => document.getElementById(id);
let modelId = "asr-s2s";
let downloadUrls = [];

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - 60 * m).toFixed(2).padStart(5, "0");
  return `${String(m).padStart(2, "0")}:${s}`;
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : `${response.status} ${response.statusText}`;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

function reset() {
  $("segments").replaceChildren();
  $("transcript").textContent = "";
  $("downloads").hidden = true;
  downloadUrls.forEach((url) => URL.revokeObjectURL(url));
  downloadUrls = [];
}

function addSegment(segment) {
  const item = document.createElement("li");
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = `${clock(segment.start)} → ${clock(segment.end)}`;
  item.append(time, document.createTextNode(segment.text));
  $("segments").append(item);
}

function offerDownloads(documents, name) {
  const stem = name.replace(/\.[^.]*$/, "") || "transcript";
  for (const [format, text] of Object.entries(documents)) {
    const link = $(`download-${format}`);
    if (!link) continue;
    const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
    downloadUrls.push(url);
    link.href = url;
    link.download = `${stem}.${format}`;
  }
  $("downloads").hidden = false;
}

// Reads server-sent events ("data: JSON" blocks separated by a blank line) from a fetch response.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

async function transcribe(file, name) {
  reset();
  const started = performance.now();
  setStatus(`Uploading ${name} (${(file.size / 1024).toFixed(0)} KB)…`);
  const form = new FormData();
  form.append("file", file, name);
  form.append("model", modelId);
  form.append("stream", "true");
  let response;
  try {
    response = await fetch("/v1/audio/transcriptions", { method: "POST", body: form, headers: authHeaders() });
  } catch (e) {
    setStatus(`The server cannot be reached: ${e.message}`, true);
    return;
  }
  if (!response.ok) {
    setStatus(await errorMessage(response), true);
    return;
  }
  setStatus(`Transcribing ${name}…`);
  for await (const event of events(response)) {
    if (event.error) {
      setStatus(event.error.message, true);
      return;
    }
    if (event.type === "transcript.text.delta") {
      addSegment(event.segment);
      $("transcript").textContent += event.delta;
    } else if (event.type === "transcript.text.done") {
      $("transcript").textContent = event.text;
      offerDownloads(event.documents, name);
      const took = (performance.now() - started) / 1000;
      setStatus(`Done: ${event.duration.toFixed(1)} s of audio in ${took.toFixed(1)} s.`);
      $("status").dataset.done = "true";
    }
  }
}

function pick(file) {
  if (file) transcribe(file, file.name);
}

$("file").addEventListener("change", (e) => pick(e.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  pick(e.dataTransfer.files[0]);
});

let recorder = null;
$("record").addEventListener("click", async () => {
  if (recorder) {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("This browser cannot record here (recording needs https or localhost).", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus(`No microphone: ${e.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = () => {
    stream.getTracks().forEach((t) => t.stop());
    $("record").textContent = "Record from the microphone";
    $("record").classList.remove("recording");
    const type = recorder.mimeType || "audio/webm";
    recorder = null;
    transcribe(new Blob(chunks, { type }), type.includes("ogg") ? "recording.ogg" : "recording.webm");
  };
  recorder.start();
  $("record").textContent = "Stop and transcribe";
  $("record").classList.add("recording");
  setStatus("Recording… press the button again to stop.");
});

fetch("/v1/models", { headers: authHeaders() })
  .then((r) => (r.ok ? r.json() : null))
  .then((body) => {
    if (body && body.data && body.data.length) {
      modelId = body.data[0].id;
      $("model").textContent = modelId;
    }
  })
  .catch(() => {});
