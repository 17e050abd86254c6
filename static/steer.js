// saescope steering playground: posts the form as JSON to /api/steer and appends each streamed token to its
// row. The answer is a server-sent event stream read with fetch (EventSource cannot POST); aborting the fetch
// (Stop, or leaving the page) closes the connection, which cancels the generation on the server.
"use strict";

(() => {
  const form = document.getElementById("steer-form");
  if (!form) return;
  const rows = document.getElementById("steer-rows");
  const chart = document.getElementById("steer-chart");
  const perplexityChart = document.getElementById("steer-perplexity-chart");
  const status = document.getElementById("steer-status");
  const stop = document.getElementById("steer-stop");
  const csrf = JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRF-Token"];
  let controller = null;

  const say = (text, isError = false) => {
    status.textContent = text;
    status.className = isError ? "error" : "muted";
  };

  // One intervention row as the API's InterventionIn; ablate ignores its value, so an empty one is left out
  // (the schema's default) rather than read as 0.
  function intervention(el) {
    const mode = el.querySelector("[name=mode]").value;
    const value = el.querySelector("[name=value]").value;
    const target = el.dataset.direction ? { direction: Number(el.dataset.direction) }
      : { feature: Number(el.querySelector("[name=feature]").value) };
    const out = { ...target, mode };
    return value === "" && mode === "ablate" ? out : { ...out, value: Number(value) };
  }

  // An empty value box is a mistake for every mode but ablate: say so on the box instead of sending 0.
  function missingValue() {
    for (const el of form.querySelectorAll(".intervention")) {
      const box = el.querySelector("[name=value]");
      const mode = el.querySelector("[name=mode]").value;
      if (box.value === "" && mode !== "ablate") {
        const what = el.dataset.direction ? `direction ${el.querySelector("a").textContent}`
          : `feature ${el.querySelector("[name=feature]").value}`;
        return { box, text: `${what}: enter a value for ${mode} (only ablate needs none)` };
      }
    }
    return null;
  }

  // The form as the API's SteerIn; numbers the browser cannot read become null and come back as a 422.
  function body() {
    const data = new FormData(form);
    const num = (name) => (data.get(name) === "" ? null : Number(data.get(name)));
    const interventions = [...form.querySelectorAll(".intervention")].map(intervention);
    const strengths = data.get("strengths").split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    return {
      sae_id: Number(form.dataset.sae), prompt: data.get("prompt"), raw: data.has("raw"), interventions,
      positions: data.get("positions"), strengths, target: data.get("target") || null,
      max_new_tokens: num("max_new_tokens"), temperature: num("temperature"), top_p: num("top_p"),
      seed: num("seed"), save: data.has("save"), name: data.get("name"), ...checks(data, num),
    };
  }

  // The "checks and conditions" fieldset: controls, the sweep's perplexity limit, an optional trigger feature.
  function checks(data, num) {
    const trigger = data.get("trigger_feature") === "" ? null : {
      feature: num("trigger_feature"), threshold: num("trigger_threshold"), stop: data.has("trigger_stop"),
    };
    return { controls: data.has("controls"), perplexity_factor: num("perplexity_factor"), trigger };
  }

  // The form's words for a field pydantic names by its path in SteerIn, e.g. ["body", "interventions", 0, "value"].
  const FIELD_NAMES = { max_new_tokens: "max new tokens", top_p: "top-p", sae_id: "SAE", positions: "positions" };
  function fieldName(loc, sent) {
    const [, field, index, part] = loc;
    if (field === "interventions" && index !== undefined) {
      const feature = sent.interventions[index] ? sent.interventions[index].feature : index;
      return part ? `feature ${feature}'s ${part}` : `feature ${feature}`;
    }
    if (field === "strengths" && index !== undefined) return `strength ${sent.strengths[index] ?? Number(index) + 1}`;
    return FIELD_NAMES[field] || String(field ?? "request").replaceAll("_", " ");
  }

  // FastAPI's 422 lists each bad field, a field once per branch of a union (text or null): one line per field.
  function problems(detail, sent) {
    const lines = new Map();
    for (const e of detail) {
      const name = fieldName(e.loc, sent);
      if (!lines.has(name)) lines.set(name, `${name}: ${e.msg.replace(/^Value error, /, "")}`);
    }
    return [...lines.values()].join("; ");
  }

  async function errorText(response, sent) {
    const { detail } = await response.json().catch(() => ({ detail: response.statusText }));
    const text = Array.isArray(detail) ? problems(detail, sent) : detail;
    const retry = response.headers.get("Retry-After");
    return `${response.status}: ${text}${retry ? ` (retry in ${retry} s)` : ""}`;
  }

  function column(row) {
    const el = document.createElement("div");
    el.className = "steer-row";
    el.dataset.row = row.row;
    const title = document.createElement("h3");
    title.textContent = row.label;
    const effect = document.createElement("div");
    effect.className = "effect";
    const out = document.createElement("pre");
    out.className = "out";
    el.append(title, out, effect);
    return el;
  }

  let sent = null;  // the request of the run in flight, to name the fields of an error that comes as an event

  const handlers = {
    loading(data) {
      say(`loading the model ${data.model}… (a first load takes about half a minute; the run starts when it is ready)`);
    },
    start(data) {
      rows.replaceChildren(...data.rows.map(column));
      say(`generating (prompt ${data.prompt_tokens} tokens)…`);
    },
    token(data) {
      const row = rows.querySelector(`[data-row="${data.row}"]`);
      row.querySelector(".out").append(data.text);
      if (data.finished) row.classList.add("finished");
    },
    done(data) {
      // Each row's measures, rendered by the server (_steer_measures.html; every text in it is escaped there).
      for (const [row, html] of Object.entries(data.measures || {})) {
        rows.querySelector(`[data-row="${row}"] .effect`).innerHTML = html;
      }
      chart.innerHTML = data.chart || "";  // server-drawn SVG; every text in it is escaped there
      perplexityChart.innerHTML = data.perplexity_chart || "";
      say("done");
      if (data.judge_error) say(`done, but the judge failed: ${data.judge_error}`, true);
      if (data.experiment_url) {
        const link = document.createElement("a");
        link.href = data.experiment_url;
        link.textContent = "saved: permalink";
        status.append(" · ", link);
        document.body.dispatchEvent(new Event("steer-saved"));  // the saved list (hx-trigger) reloads itself
      }
    },
    judging() {
      say("asking the judge…");
    },
    error(data) {
      say(Array.isArray(data.detail) ? problems(data.detail, sent) : data.detail, true);
    },
  };

  function dispatch(block) {
    const kind = /^event: (.*)$/m.exec(block);
    const data = /^data: (.*)$/m.exec(block);
    if (kind && data && handlers[kind[1]]) handlers[kind[1]](JSON.parse(data[1]));
  }

  async function run(event) {
    event.preventDefault();
    const missing = missingValue();
    if (missing) {
      missing.box.focus();
      return say(missing.text, true);
    }
    if (controller) controller.abort();
    controller = new AbortController();
    rows.replaceChildren();
    chart.replaceChildren();
    perplexityChart.replaceChildren();
    say("waiting for the model…");
    stop.hidden = false;
    try {
      sent = body();
      const response = await fetch("/api/steer", {
        method: "POST", signal: controller.signal, body: JSON.stringify(sent),
        headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRF-Token": csrf },
      });
      if (!response.ok) return say(await errorText(response, sent), true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (err) {
      say(err.name === "AbortError" ? "stopped" : `failed: ${err.message}`, err.name !== "AbortError");
    } finally {
      stop.hidden = true;
    }
  }

  // A pick adds the feature once (the API refuses a feature twice: a second pick goes to its row) and closes
  // the picker, so the next click cannot land on the same result.
  // The value starts at the feature's largest recorded activation (2 significant digits), the scale it works
  // at, as the page does for a feature opened from its page (routes/steer.add_value).
  function addIntervention(feature, label, maxAct) {
    const rows = [...document.querySelectorAll("#interventions .intervention")];
    let row = rows.find((el) => el.querySelector("[name=feature]")?.value === String(feature));
    if (!row) {
      row = document.getElementById("intervention-template").content.firstElementChild.cloneNode(true);
      row.querySelector("[name=feature]").value = feature;
      row.querySelector(".feature-label").textContent = label;
      const max = Number(maxAct);
      if (max > 0) {
        row.querySelector("[name=value]").value = Number(max.toPrecision(2));
        row.querySelector(".feature-max").textContent = `max activation ${maxAct}`;
      }
      document.getElementById("interventions").append(row);
    }
    const query = document.getElementById("picker-q");
    query.value = "";
    query.dispatchEvent(new Event("input"));  // htmx's "changed" then sees the same search typed again as new
    document.getElementById("picker-results").replaceChildren();
    row.querySelector("[name=value]").focus();
  }

  // A saved direction joins the interventions once, like a picked feature.
  function addDirection(id, name) {
    if (document.querySelector(`#interventions [data-direction="${id}"]`)) return;
    const row = document.getElementById("direction-template").content.firstElementChild.cloneNode(true);
    row.dataset.direction = id;
    row.querySelector("a").textContent = name;
    document.getElementById("interventions").append(row);
    row.querySelector("[name=value]").focus();
  }

  form.addEventListener("submit", run);
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("click", (event) => {
    const pick = event.target.closest(".pick");
    if (pick) addIntervention(pick.dataset.feature, pick.dataset.label, pick.dataset.max);
    const direction = event.target.closest(".add-direction");
    if (direction) addDirection(direction.dataset.direction, direction.dataset.name);
    const remove = event.target.closest(".intervention .remove");
    if (remove) remove.closest(".intervention").remove();
  });
})();
