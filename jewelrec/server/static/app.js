// The shopper's page: a photo in, similar catalog pieces out. Plain JS, no build step.
// Catalog text only ever reaches the DOM through textContent, and links only when http(s).

const $ = (id) => document.getElementById(id);

const el = {
  dropzone: $("dropzone"),
  choose: $("choose-photo"),
  input: $("photo-input"),
  stageWrap: $("stage-wrap"),
  stage: $("stage"),
  photo: $("photo"),
  cropBox: $("crop-box"),
  cropLabel: $("crop-label"),
  dragBox: $("drag-box"),
  hotspots: $("hotspots"),
  detected: $("detected"),
  autoArea: $("auto-area"),
  wholePhoto: $("whole-photo"),
  changePhoto: $("change-photo"),
  examples: $("examples"),
  exampleList: $("example-list"),
  filters: $("filters"),
  typeChips: $("type-chips"),
  currencyLabel: $("currency-label"),
  minPrice: $("min-price"),
  maxPrice: $("max-price"),
  brand: $("brand"),
  metal: $("metal"),
  k: $("k"),
  resultsHeading: $("results-heading"),
  back: $("back-to-photo"),
  status: $("status"),
  error: $("error"),
  notJewelry: $("not-jewelry"),
  typeQuestion: $("type-question"),
  typeQuestionText: $("type-question-text"),
  typeAnswers: $("type-answers"),
  empty: $("empty"),
  emptyText: $("empty-text"),
  widen: $("widen"),
  welcome: $("welcome"),
  results: $("results"),
  cardTemplate: $("card-template"),
  searchForm: $("search-form"),
  query: $("query"),
  withPhoto: $("with-photo"),
  withPhotoLabel: $("with-photo-label"),
  withPhotoText: $("with-photo-text"),
  applied: $("applied"),
  appliedNotes: $("applied-notes"),
};

const state = {
  photo: null, // the Blob we re-POST whenever a filter changes
  photoName: null,
  photoUrl: null,
  photoSize: null, // {width, height} as the server decoded it (EXIF-rotated)
  crop: null, // [x0, y0, x1, y1] the shopper chose; null: let the server find the piece
  piece: null, // index into the answer's pieces the shopper picked; null: the first (server's)
  type: null, // null: the detected type; "any" or a type: the shopper's choice
  mode: "photo", // "photo", "similar" or "text" (words alone)
  similarTo: null, // {id, title} in "similar" mode
  query: null, // the shopper's words: alone ("text"), or with the photo / the product
  facets: { types: [], brands: [], metals: [], currency: "USD" },
  seq: 0,
  controller: null,
  choice: 0, // bumped by each photo the shopper picks: a late example must not replace it
  following: false, // the search running is the one the address names (see remember)
};

const TIMEOUT_MS = 30000; // a search unanswered this long is given up, with a way to retry
const RETRIES = 1; // a 503 (the server's queue is full) is asked again after its Retry-After
const MAX_WAIT_S = 5;

const ANY = "any";
const PLURALS = { any: "pieces" };

// ---------------------------------------------------------------------------------------------
// Small helpers

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

function formatPrice(amount, currency, { dropWholeCents = false } = {}) {
  // A limit the shopper typed reads better without cents ("under $20").
  const digits = dropWholeCents && Number.isInteger(amount) ? { maximumFractionDigits: 0 } : {};
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency, ...digits })
      .format(amount);
  } catch {
    return `${amount.toFixed(2)} ${currency}`;
  }
}

function safeHttpUrl(text) {
  try {
    const url = new URL(text, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function plural(type) {
  if (!type) return "pieces";
  return PLURALS[type] || (type.endsWith("s") ? type : `${type}s`);
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function withArticle(type) {
  return `${/^[aeiou]/i.test(type) ? "an" : "a"} ${type}`;
}

function listWithOr(items) {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} or ${items[items.length - 1]}`;
}

function numberOrNull(input) {
  const value = input.value.trim();
  if (value === "") return null;
  const number = Number(value);
  return Number.isFinite(number) ? number : null;
}

// ---------------------------------------------------------------------------------------------
// Status, errors and the empty state

function setStatus(text) {
  el.status.textContent = text;
}

// On a phone the results lie under the photo and the filters, a screen or two down: what a
// search says (results, an error, nothing found) is brought into view, without the smooth
// scroll for a shopper who asked for less motion.
function bringIntoView(element) {
  if (!window.matchMedia("(max-width: 720px)").matches) return;
  const top = element.getBoundingClientRect().top;
  if (top >= 0 && top < window.innerHeight * 0.8) return;
  const still = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  element.scrollIntoView({ behavior: still ? "auto" : "smooth", block: "start" });
}

function showError(text, retry = null) {
  el.error.replaceChildren(text || "");
  if (text && retry) {
    const again = Object.assign(document.createElement("button"), {
      type: "button", className: "button small", textContent: "Try again",
    });
    again.addEventListener("click", () => {
      el.resultsHeading.focus({ preventScroll: true }); // this button goes with the message
      retry();
    });
    el.error.append(" ", again);
  }
  el.error.hidden = !text;
}

function setLoading(loading) {
  el.results.setAttribute("aria-busy", loading ? "true" : "false");
  document.body.classList.toggle("loading", loading);
  if (loading) setStatus("Searching…");
}

async function errorMessage(response) {
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    detail = null;
  }
  if (response.status >= 500 && response.status !== 503) {
    return "Something went wrong on our side. Please try again in a moment.";
  }
  if (typeof detail === "string" && detail) return capitalise(detail.replaceAll("_", " "));
  if (response.status === 413) return "The photo is too large: please use a smaller one.";
  return `The request failed (${response.status}). Please try again.`;
}

function describePrice(min, max, currency) {
  const fmt = (v) => formatPrice(v, currency, { dropWholeCents: true });
  if (min !== null && max !== null) return `between ${fmt(min)} and ${fmt(max)}`;
  if (max !== null) return `under ${fmt(max)}`;
  if (min !== null) return `over ${fmt(min)}`;
  return "";
}

function showEmpty(searchedType, applied) {
  const worded = appliedParts(applied);
  const min = numberOrNull(el.minPrice);
  const max = numberOrNull(el.maxPrice);
  const things = plural(searchedType);
  const currency = state.facets.currency;
  const brand = el.brand.value;
  const metal = el.metal.value;
  let text;
  let action;
  let label;
  if (min !== null || max !== null) {
    text = `No ${things} ${describePrice(min, max, currency)}. Widen the price range?`;
    label = max !== null ? "Remove the maximum price" : "Remove the minimum price";
    action = () => {
      if (max !== null) el.maxPrice.value = "";
      else el.minPrice.value = "";
    };
  } else if (brand || metal) {
    const parts = [brand && `from ${brand}`, metal && `in ${metal}`].filter(Boolean).join(" ");
    text = `No ${things} ${parts}. Show every brand and metal?`;
    label = "Show every brand and metal";
    action = () => {
      el.brand.value = "";
      el.metal.value = "";
    };
  } else if (state.mode === "text" && (!state.type || state.type === ANY)) {
    // the words chose the filters: every type was searched already, there is nothing to widen
    const filtered = worded.length ? ` (${worded.join(", ")})` : "";
    text = `Nothing in the catalog matches “${state.query}”${filtered}. Try other words?`;
    label = null;
  } else {
    const filtered = worded.length ? ` with ${worded.join(", ")}` : " in the catalog";
    text = `No ${things}${filtered}. Search every type?`;
    label = "Search every type";
    action = () => selectType(ANY, true);
  }
  el.emptyText.textContent = text;
  el.widen.hidden = label === null;
  el.widen.textContent = label || "";
  el.widen.onclick = () => {
    action();
    el.resultsHeading.focus({ preventScroll: true }); // this notice hides with the answer
    search();
  };
  el.empty.hidden = false;
  setStatus(text);
  bringIntoView(el.empty);
}

// ---------------------------------------------------------------------------------------------
// Facets: the filter controls

function fillSelect(select, values) {
  for (const value of values) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = capitalise(value);
    select.append(option);
  }
}

const chipSearch = debounce(() => search(), 250);

function renderTypeChips(types) {
  el.typeChips.replaceChildren();
  for (const type of [ANY, ...types]) {
    const id = `type-${type.replace(/[^a-z0-9_-]/gi, "_")}`;
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "type";
    input.value = type;
    input.id = id;
    input.className = "chip-input";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.className = "chip";
    label.textContent = type === ANY ? "All types" : capitalise(plural(type));
    input.addEventListener("change", () => {
      state.type = type;
      chipSearch(); // the arrow keys step through every chip on the way: one search at the end
    });
    el.typeChips.append(input, label);
  }
}

function selectType(type, asChoice) {
  for (const input of el.typeChips.querySelectorAll("input")) {
    input.checked = input.value === type;
  }
  if (asChoice) state.type = type;
}

async function loadFacets() {
  try {
    const response = await fetch("/api/facets");
    if (!response.ok) throw new Error(await errorMessage(response));
    const facets = await response.json();
    state.facets = facets;
    renderTypeChips(facets.types);
    fillSelect(el.brand, facets.brands);
    fillSelect(el.metal, facets.metals);
    el.currencyLabel.textContent = `(${facets.currency})`;
    if (facets.price_min !== null) el.minPrice.placeholder = String(Math.floor(facets.price_min));
    if (facets.price_max !== null) el.maxPrice.placeholder = String(Math.ceil(facets.price_max));
    el.query.placeholder = wordsPlaceholder(facets);
    // what this shop sells (an anklet shop is not told "a ring, necklace, bracelet or earrings")
    if (facets.types.length) $("welcome-types").textContent = listWithOr(facets.types.map(withArticle));
  } catch (err) {
    showError(`Could not load the catalog's filters: ${err.message}`);
  }
}

// The search box's example words, from this catalog's own types, metals and prices: a fixed
// "rose gold hoops under 100" found nothing in a shop without rose gold.
function wordsPlaceholder(facets) {
  const [type] = facets.types;
  if (!type) return el.query.placeholder;
  const [metal, other] = facets.metals;
  const words = [metal, plural(type)].filter(Boolean).join(" ");
  const low = facets.price_min;
  const high = facets.price_max;
  let price = "";
  if (low !== null && high !== null && high > 0) {
    const middle = Math.sqrt(Math.max(low, 1) * high); // prices spread over orders of magnitude
    const step = 10 ** Math.floor(Math.log10(middle));
    price = ` under ${Math.min(Math.ceil(middle / step) * step, Math.ceil(high))}`;
  }
  const forPhoto = other || metal;
  return `“${words}${price}”${forPhoto ? `, or for your photo: “in ${forPhoto}”` : ""}`;
}

async function loadExamples() {
  try {
    const response = await fetch("/api/examples");
    if (!response.ok) return;
    const examples = await response.json();
    for (const example of examples) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "example";
      button.setAttribute("aria-label", `Search with: ${example.title}`);
      const img = document.createElement("img");
      img.src = example.image_url;
      img.alt = "";
      img.loading = "lazy";
      button.append(img);
      button.addEventListener("click", () => useExample(example));
      item.append(button);
      el.exampleList.append(item);
    }
    el.examples.hidden = examples.length === 0 || state.photo !== null;
  } catch {
    // Examples are a convenience; the page works without them.
  }
}

async function useExample(example) {
  const choice = ++state.choice;
  try {
    const response = await fetch(example.image_url);
    if (!response.ok) throw new Error("missing");
    const blob = await response.blob();
    // the shopper picked another example or their own photo meanwhile: theirs stands
    if (choice === state.choice) await usePhoto(blob, example.title, true);
  } catch {
    if (choice !== state.choice) return;
    showError("That example photo could not be loaded. Try another, or use your own photo.");
  }
}

// ---------------------------------------------------------------------------------------------
// The photo: pick, drop, paste; the searched area

async function usePhoto(blob, name, fromExample = false) {
  if (!fromExample) state.choice += 1; // an example still loading is no longer wanted
  // a file the browser gives no type (a photo without an extension) is the server's to judge
  if (!blob || (blob.type && !blob.type.startsWith("image/"))) {
    showError("That file is not an image. Choose a JPEG, PNG, WebP, GIF, BMP or TIFF photo.");
    return;
  }
  const fileName = name || blob.name || "photo";
  // the button or example that has the keyboard is about to hide: the photo takes it then
  const picker = document.activeElement;
  const refocus = !picker || picker === document.body || el.dropzone.contains(picker) ||
    el.examples.contains(picker);
  blob = await shrunk(blob);
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photo = blob;
  state.photoName = fileName;
  state.photoUrl = URL.createObjectURL(blob);
  state.photoSize = null;
  state.crop = null;
  state.piece = null;
  state.type = null;
  state.mode = "photo";
  state.similarTo = null;
  state.query = null;
  el.query.value = "";
  el.withPhotoLabel.hidden = false;
  el.withPhotoText.textContent = "with my photo";
  el.resultsHeading.textContent = "Similar pieces";
  el.back.hidden = true;
  el.photo.src = state.photoUrl;
  el.photo.alt = "Your photo"; // a file name ("IMG_1234.jpg") says nothing when read aloud
  el.photo.onerror = () => { // a format the browser cannot show (TIFF): searched all the same
    el.photo.alt = "Your photo, which this browser cannot show; it is searched all the same";
  };
  el.cropBox.hidden = true;
  el.hotspots.hidden = true;
  el.hotspots.replaceChildren();
  el.detected.textContent = "";
  el.stageWrap.hidden = false;
  el.dropzone.hidden = true;
  el.examples.hidden = true;
  if (refocus) el.stage.focus({ preventScroll: true });
  await search();
  if (el.results.children.length) bringIntoView(el.resultsHeading);
}

// A phone's photo (3-5 MB, a 48 MP one over the server's upload limit, and far more than the
// models look at: the server reads 720 px of it) is sent as a JPEG of at most SHRINK_SIDE
// pixels a side: on a slow connection a 3 MB photo did not finish uploading in the 30 s a
// search may take. A photo the browser cannot decode (HEIC, TIFF) goes as it is, for the
// server to judge.
const SHRINK_BYTES = 1_500_000;
const SHRINK_SIDE = 1600;

async function shrunk(blob) {
  if (blob.size <= SHRINK_BYTES || !window.createImageBitmap) return blob;
  try {
    const bitmap = await createImageBitmap(blob); // EXIF orientation applied
    const scale = Math.min(1, SHRINK_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const smaller = await new Promise((done) => canvas.toBlob(done, "image/jpeg", 0.9));
    return smaller && smaller.size < blob.size ? smaller : blob;
  } catch {
    return blob;
  }
}

// A photo the server cannot read (HEIC, a PDF renamed .jpg): the page goes back to asking for
// one, rather than sending the same file again with every filter change.
function forgetPhoto() {
  state.photo = null;
  el.stageWrap.hidden = true;
  el.dropzone.hidden = false;
  el.results.replaceChildren();
  el.detected.textContent = "";
  showDoubts(null);
}

function photoSize() {
  if (state.photoSize) return state.photoSize;
  return { width: el.photo.naturalWidth, height: el.photo.naturalHeight };
}

function showCrop(box, chosen) {
  const size = photoSize();
  if (!box || !size.width || !size.height) {
    el.cropBox.hidden = true;
    return;
  }
  const [x0, y0, x1, y1] = box;
  el.cropBox.style.left = `${(100 * x0) / size.width}%`;
  el.cropBox.style.top = `${(100 * y0) / size.height}%`;
  el.cropBox.style.width = `${(100 * (x1 - x0)) / size.width}%`;
  el.cropBox.style.height = `${(100 * (y1 - y0)) / size.height}%`;
  el.cropBox.classList.toggle("chosen", chosen);
  el.cropLabel.textContent = chosen ? "your area" : "found";
  el.cropBox.hidden = false;
}

// The pieces the server found in the photo (a set, or several worn pieces): one button each,
// centred on the piece and labelled with its type; a click (or Enter/Space) searches that piece.
function showPieces(answer) {
  const pieces = answer.pieces || [];
  const size = photoSize();
  // the buttons are drawn anew: a keyboard on one of them stays on the same piece
  const focused = el.hotspots.contains(document.activeElement)
    ? document.activeElement.dataset.piece : null;
  el.hotspots.replaceChildren();
  el.hotspots.hidden = pieces.length < 2 || !size.width || !size.height;
  if (el.hotspots.hidden) return;
  pieces.forEach((piece, i) => {
    const [x0, y0, x1, y1] = piece.box;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hotspot";
    button.dataset.piece = String(i);
    button.dataset.type = piece.type;
    button.style.left = `${(50 * (x0 + x1)) / size.width}%`;
    button.style.top = `${(50 * (y0 + y1)) / size.height}%`;
    const searched = answer.piece === i;
    button.setAttribute("aria-pressed", searched ? "true" : "false");
    const percent = percentSure(piece.confidence);
    button.setAttribute("aria-label",
      `Piece ${i + 1} of ${pieces.length}: ${withArticle(piece.type)} (${percent} sure)` +
      (searched ? ", shown below" : `: search ${plural(piece.type)} like it`));
    const label = document.createElement("span");
    label.className = "hotspot-label";
    label.textContent = capitalise(piece.type);
    button.append(label);
    button.addEventListener("click", () => choosePiece(i));
    el.hotspots.append(button);
    if (focused === String(i)) button.focus({ preventScroll: true });
  });
}

function choosePiece(index) {
  state.piece = index;
  state.crop = null; // the piece's own box is searched
  state.type = null; // ...as the type the server reads in it
  backToPhotoMode();
  search();
}

function startDrawing() {
  let start = null;
  const point = (event) => {
    const rect = el.stage.getBoundingClientRect();
    return {
      x: Math.min(Math.max(event.clientX - rect.left, 0), rect.width),
      y: Math.min(Math.max(event.clientY - rect.top, 0), rect.height),
      rect,
    };
  };
  const boxOf = (a, b) => ({
    left: Math.min(a.x, b.x),
    top: Math.min(a.y, b.y),
    width: Math.abs(a.x - b.x),
    height: Math.abs(a.y - b.y),
  });
  let least = 8; // px: a smaller box is a click (a tap: a finger is not that precise)
  el.stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !state.photo || event.target.closest(".hotspot")) return;
    // a finger's swipe is the browser's to scroll with (pointercancel ends the box then)
    if (event.pointerType !== "touch") event.preventDefault();
    least = event.pointerType === "touch" ? 32 : 8;
    start = point(event);
    el.stage.setPointerCapture(event.pointerId);
  });
  el.stage.addEventListener("pointermove", (event) => {
    if (!start) return;
    const box = boxOf(start, point(event));
    Object.assign(el.dragBox.style, {
      left: `${box.left}px`,
      top: `${box.top}px`,
      width: `${box.width}px`,
      height: `${box.height}px`,
    });
    el.dragBox.hidden = false;
  });
  const finish = (event) => {
    if (!start) return;
    const end = point(event);
    const box = boxOf(start, end);
    start = null;
    el.dragBox.hidden = true;
    if (box.width < least || box.height < least) return; // a click, not a box
    const size = photoSize();
    const sx = size.width / end.rect.width;
    const sy = size.height / end.rect.height;
    searchArea([
      Math.round(box.left * sx),
      Math.round(box.top * sy),
      Math.round((box.left + box.width) * sx),
      Math.round((box.top + box.height) * sy),
    ]);
  };
  el.stage.addEventListener("pointerup", finish);
  el.stage.addEventListener("pointercancel", () => {
    start = null;
    el.dragBox.hidden = true;
  });
}

// [x0, y0, x1, y1] in the photo's pixels, drawn or placed with the keys: searched alone.
function searchArea(box) {
  state.crop = box;
  state.piece = null;
  showCrop(state.crop, true);
  backToPhotoMode();
  search();
}

// Drawing takes a pointer (WCAG 2.1.1, 2.5.7): on the photo, Enter or Space places an area (the
// one searched, else the middle of the photo), the arrow keys move it, Shift and the arrows
// resize it from its far corner, Enter or Space searches it and Escape lets it go.
const AREA_STEPS = 20; // an arrow moves the area by 1/20 of the photo

function keyboardArea() {
  let box = null; // [x0, y0, x1, y1] in the photo's pixels while it is being placed
  const clamp = (value, low, high) => Math.min(Math.max(value, low), high);
  const drop = () => {
    box = null;
    el.dragBox.hidden = true;
  };
  const show = (size) => {
    const [x0, y0, x1, y1] = box;
    Object.assign(el.dragBox.style, {
      left: `${(100 * x0) / size.width}%`,
      top: `${(100 * y0) / size.height}%`,
      width: `${(100 * (x1 - x0)) / size.width}%`,
      height: `${(100 * (y1 - y0)) / size.height}%`,
    });
    el.dragBox.hidden = false;
  };
  const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  el.stage.addEventListener("keydown", (event) => {
    const size = photoSize();
    if (event.target !== el.stage || !state.photo || !size.width || !size.height) return;
    const enter = event.key === "Enter" || event.key === " ";
    if (box === null) {
      if (!enter) return;
      event.preventDefault();
      const [w, h] = [size.width, size.height];
      box = state.crop ? [...state.crop]
        : [Math.round(w * 0.2), Math.round(h * 0.2), Math.round(w * 0.8), Math.round(h * 0.8)];
      show(size);
      setStatus("Arrow keys move the area, Shift with the arrow keys resizes it, Enter " +
        "searches it, Escape cancels.");
      return;
    }
    const stepX = Math.max(1, Math.round(size.width / AREA_STEPS));
    const stepY = Math.max(1, Math.round(size.height / AREA_STEPS));
    if (event.key in moves) {
      event.preventDefault();
      const [dx, dy] = moves[event.key];
      const [x0, y0, x1, y1] = box;
      if (event.shiftKey) {
        box = [x0, y0, clamp(x1 + dx * stepX, x0 + stepX, size.width),
          clamp(y1 + dy * stepY, y0 + stepY, size.height)];
      } else {
        const mx = clamp(dx * stepX, -x0, size.width - x1);
        const my = clamp(dy * stepY, -y0, size.height - y1);
        box = [x0 + mx, y0 + my, x1 + mx, y1 + my];
      }
      show(size);
    } else if (enter) {
      event.preventDefault();
      const chosen = box;
      drop();
      searchArea(chosen);
    } else if (event.key === "Escape") {
      event.preventDefault();
      drop();
      setStatus("");
    }
  });
  el.stage.addEventListener("blur", drop);
}

function wirePhotoInputs() {
  el.choose.addEventListener("click", () => el.input.click());
  el.changePhoto.addEventListener("click", () => el.input.click());
  el.input.addEventListener("change", () => {
    const file = el.input.files && el.input.files[0];
    if (file) usePhoto(file, file.name);
    el.input.value = ""; // picking the same file again still fires "change"
  });

  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    el.dropzone.classList.add("over");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) el.dropzone.classList.remove("over");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    el.dropzone.classList.remove("over");
    const file = [...(event.dataTransfer?.files || [])][0];
    if (file) usePhoto(file, file.name);
  });
  document.addEventListener("paste", (event) => {
    const item = [...(event.clipboardData?.items || [])].find(
      (i) => i.kind === "file" && i.type.startsWith("image/"),
    );
    if (!item) return; // ordinary text pastes into the price fields stay untouched
    event.preventDefault();
    usePhoto(item.getAsFile(), "pasted photo");
  });

  el.autoArea.addEventListener("click", () => {
    state.crop = null;
    state.piece = null;
    backToPhotoMode();
    search();
  });
  el.wholePhoto.addEventListener("click", () => {
    const size = photoSize();
    if (!size.width) return;
    searchArea([0, 0, size.width, size.height]);
  });
  startDrawing();
  keyboardArea();
}

// ---------------------------------------------------------------------------------------------
// Searching

function filterParams() {
  const params = new URLSearchParams();
  params.set("k", el.k.value);
  const min = numberOrNull(el.minPrice);
  const max = numberOrNull(el.maxPrice);
  if (min !== null) params.set("min_price", String(min));
  if (max !== null) params.set("max_price", String(max));
  if (state.type) params.set("type", state.type);
  if (el.brand.value) params.set("brand", el.brand.value);
  if (el.metal.value) params.set("metal", el.metal.value);
  return params;
}

function fail(message, retry = true) {
  // the last answer stays (dimmed) under the message; "Try again" repeats the search
  el.empty.hidden = true;
  showError(message, retry ? () => search() : null);
  setStatus(""); // the alert above is announced by itself
  bringIntoView(el.error);
}

// `typing`: a search the price fields start as the shopper types: "1000" passes through "1",
// "10" and "100" below a minimum of 300, which is not worth an alert each time; the field's
// change (leaving it, Enter) says so.
function search({ typing = false } = {}) {
  const min = numberOrNull(el.minPrice);
  const max = numberOrNull(el.maxPrice);
  if (min !== null && max !== null && min > max) {
    if (state.controller) state.controller.abort();
    state.seq += 1; // an answer still on its way is stale now
    setLoading(false);
    el.results.classList.add("stale"); // shown for another price range: dimmed until searched
    if (!typing) {
      fail("The minimum price is above the maximum price. Lower the minimum or raise the " +
        "maximum.", false);
    }
    return Promise.resolve();
  }
  showError("");
  remember();
  const params = filterParams();
  if (state.query) params.set("q", state.query);
  if (state.mode === "text") return request(`/api/search?${params}`, {});
  if (state.mode === "similar" && state.similarTo) {
    const url = `/api/products/${encodeURIComponent(state.similarTo.id)}/similar?${params}`;
    return request(url, {});
  }
  if (!state.photo) return Promise.resolve();
  const form = new FormData();
  form.append("photo", state.photo, state.photoName || "photo");
  for (const [key, value] of params) form.append(key, value);
  if (state.crop) form.append("crop", state.crop.join(","));
  else if (state.piece !== null) form.append("piece", String(state.piece));
  return request("/api/recommend", { method: "POST", body: form });
}

async function request(url, options) {
  if (state.controller) state.controller.abort();
  const controller = new AbortController();
  state.controller = controller;
  const seq = ++state.seq;
  let timedOut = false;
  const timer = setTimeout(() => { timedOut = true; controller.abort(); }, TIMEOUT_MS);
  setLoading(true);
  try {
    let response = await fetch(url, { ...options, signal: controller.signal });
    for (let left = RETRIES; response.status === 503 && left > 0; left -= 1) {
      const wait = Number.parseInt(response.headers.get("Retry-After") || "", 10);
      await new Promise((done) => setTimeout(done,
        1000 * (Number.isFinite(wait) && wait >= 0 ? Math.min(wait, MAX_WAIT_S) : 1)));
      if (seq !== state.seq) return;
      response = await fetch(url, { ...options, signal: controller.signal });
    }
    if (seq !== state.seq) return;
    if (!response.ok) {
      const message = await errorMessage(response);
      if (response.status === 415 && options.method === "POST") forgetPhoto();
      // a photo the server cannot read will not be read on a retry either, nor will a
      // product without a photo of its own (409) gain one: no "Try again" for those
      if (seq === state.seq) fail(message, ![409, 413, 415, 422].includes(response.status));
      return;
    }
    let answer;
    try {
      answer = await response.json();
    } catch {
      if (seq === state.seq) fail("The shop's server sent an answer this page cannot read.");
      return;
    }
    if (seq === state.seq) render(answer);
  } catch (err) {
    if (seq !== state.seq) return;
    if (err.name === "AbortError" && !timedOut) return;
    fail(timedOut ? "The search took too long: the connection may be slow, or the shop busy." :
      "Could not reach the shop's server. Check your connection and try again.");
  } finally {
    clearTimeout(timer);
    if (seq === state.seq) setLoading(false);
  }
}

// A probability as a whole percentage that never overstates: 0.9996 is ">99%" (an unsure
// answer "100% sure" reads as a contradiction), 0.004 is "<1%".
function percentSure(probability) {
  const p = probability || 0;
  const shown = Math.round(100 * p);
  if (shown >= 100 && p < 1) return ">99%";
  if (shown <= 0 && p > 0) return "<1%";
  return `${shown}%`;
}

function render(answer) {
  el.results.classList.remove("stale");
  el.welcome.hidden = true;
  el.empty.hidden = true;
  if (state.mode === "photo") {
    state.photoSize = answer.photo_size || state.photoSize;
    showCrop(answer.crop, state.crop !== null);
    showPieces(answer);
    if (answer.type) {
      const percent = percentSure(answer.type_confidence);
      // undecided because the photo is unlike this shop's jewelry: said by the notice below
      const unsure = !state.type && answer.type_decided === false && answer.recognised !== false;
      const count = (answer.pieces || []).length;
      const said = [
        "Looks like ",
        Object.assign(document.createElement("strong"), { textContent: answer.type }),
        ` · ${percent} sure`,
        unsure ? ", so the likely types are shown" : "",
        count > 1 ? ` · ${count} pieces in your photo: pick one on it to search that one` : "",
      ];
      // a live region: rewritten only when it says something new (a brand picked is no news)
      const text = said.map((part) => (typeof part === "string" ? part : part.textContent));
      if (el.detected.textContent !== text.join("")) el.detected.replaceChildren(...said);
    }
  }
  showDoubts(answer);
  showApplied(answer.applied);
  const searched = answer.searched_types;
  const shownType = searched && searched.length === 1 ? searched[0] : ANY;
  if (!state.type) selectType(shownType, false);

  el.results.replaceChildren(...answer.results.map(card));
  if (answer.results.length === 0) {
    showEmpty(shownType, answer.applied);
    return;
  }
  const count = answer.results.length;
  const things = count === 1 ? (shownType === ANY ? "piece" : shownType) : plural(shownType);
  const what = {
    similar: () => `like “${state.similarTo.title}”`,
    text: () => `for “${state.query}”`,
  }[state.mode]?.() || "like your photo";
  const price = describePrice(numberOrNull(el.minPrice), numberOrNull(el.maxPrice),
    state.facets.currency);
  // the notices above the results are said with them: a screen reader hears the status only
  const doubts = [el.notJewelry, el.typeQuestionText].filter((notice) => !notice.closest("[hidden]"))
    .map((notice) => ` ${notice.textContent}`).join("");
  setStatus(`${count} ${things} ${what}${price ? `, ${price}` : ""}.${doubts}`);
}

// The answer's doubts: a photo unlike this shop's jewelry, and a type it could not decide,
// asked as a question whose answers re-run the search with that type.
function showDoubts(answer) {
  const photo = answer !== null && state.mode === "photo";
  el.notJewelry.hidden = !(photo && answer.recognised === false);
  const choices = photo && answer.type_decided === false && !state.type
    ? (answer.type_alternatives || []).map((a) => a.type)
    : [];
  el.typeQuestion.hidden = choices.length === 0;
  el.typeAnswers.replaceChildren();
  if (choices.length === 0) return;
  el.typeQuestionText.textContent = `Is this ${listWithOr(choices.map(withArticle))}?`;
  for (const type of choices) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.dataset.type = type;
    button.textContent = capitalise(type);
    button.setAttribute("aria-label", `It is ${withArticle(type)}: search ${plural(type)}`);
    button.addEventListener("click", () => {
      selectType(type, true);
      el.resultsHeading.focus({ preventScroll: true }); // the question is gone after this
      search();
    });
    el.typeAnswers.append(button);
  }
}

function card(result) {
  const node = el.cardTemplate.content.firstElementChild.cloneNode(true);
  node.dataset.id = result.id;
  node.dataset.price = String(result.price);
  const img = node.querySelector(".thumb-img");
  img.src = result.image_url;
  img.alt = ""; // the card's title follows as its heading: read once, not twice
  node.querySelector(".card-type").textContent = result.type;
  const match = node.querySelector(".match");
  match.textContent = `${Math.round(Math.max(0, result.score) * 100)}% match`;
  match.title = `Visual similarity ${result.score.toFixed(3)}`;
  match.hidden = state.mode === "text"; // a text search's score is no similarity
  node.querySelector(".card-title").textContent = result.title;
  const brand = node.querySelector(".card-brand");
  brand.textContent = result.brand || "";
  brand.hidden = !result.brand;
  whyChips(node.querySelector(".why"), result.why || []);
  sameInChips(node.querySelector(".same-in"), result);
  if (result.metal) node.dataset.metal = result.metal;
  node.querySelector(".price").textContent = formatPrice(result.price, result.currency);
  const buy = node.querySelector(".buy");
  const href = safeHttpUrl(result.url);
  if (href) {
    buy.href = href;
    buy.setAttribute("aria-label", `Buy ${result.title} (opens the shop in a new tab)`);
  } else {
    buy.remove();
  }
  const more = node.querySelector(".more");
  more.setAttribute("aria-label", `More like this: ${result.title}`); // the visible words first
  more.addEventListener("click", () => moreLike(result));
  return node;
}

// The server's reasons for a result ("ring like yours", "looks 82% alike"), as text chips.
function whyChips(list, reasons) {
  for (const reason of reasons) {
    const chip = document.createElement("li");
    chip.className = "why-chip";
    chip.textContent = reason;
    list.append(chip);
  }
  list.hidden = reasons.length === 0;
}

// "The same in silver / in gold": the catalog's other metals, each re-running "more like this" on
// the card's product with the words "in <metal>" (shown in the search box, where they stay).
function sameInChips(group, result) {
  const metals = (state.facets.metals || []).filter((m) => m !== result.metal).slice(0, 3);
  group.setAttribute("aria-label", `The same as ${result.title}, in another metal`);
  for (const metal of metals) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.dataset.metal = metal;
    button.textContent = `in ${metal}`;
    button.setAttribute("aria-label", `Pieces like ${result.title}, in ${metal}`);
    button.addEventListener("click", () => {
      el.metal.value = ""; // the words choose the metal now
      moreLike(result, `in ${metal}`);
    });
    group.append(button);
  }
  group.hidden = metals.length === 0;
}

// The filters the words applied (the answer's `applied`), as short phrases.
function appliedParts(applied) {
  const parts = [];
  if (!applied) return parts;
  for (const key of ["types", "metals", "stones", "brands", "tags"]) {
    parts.push(...(applied[key] || []));
  }
  // what the words ruled out ("without diamonds"), said as such
  for (const values of Object.values(applied.excluded || {})) {
    parts.push(...values.map((value) => `not ${value}`));
  }
  const currency = state.facets.currency;
  const price = describePrice(applied.min_price ?? null, applied.max_price ?? null, currency);
  if (price) parts.push(price);
  return parts;
}

// What the words applied as filters, in one line, and its notes.
function showApplied(applied) {
  const parts = appliedParts(applied);
  el.applied.textContent = parts.length ? `Your words filtered: ${parts.join(", ")}` : "";
  el.applied.hidden = parts.length === 0;
  // Words the server read but could not use ("under -5"): said, one line each, as text (they
  // quote the shopper's words).
  const notes = (applied && applied.notes) || [];
  el.appliedNotes.replaceChildren(
    ...notes.map((note) => Object.assign(document.createElement("li"), { textContent: note })),
  );
  el.appliedNotes.hidden = notes.length === 0;
}

// "More like this" on a result; `words` (a "same, in <metal>" chip) go with it. Words that were
// a text search of their own do not.
function moreLike(result, words) {
  if (words !== undefined) {
    state.query = words;
    el.query.value = words;
  } else if (state.mode === "text") {
    state.query = null;
    el.query.value = "";
  }
  showSimilarMode({ id: result.id, title: result.title });
  search();
  el.resultsHeading.focus({ preventScroll: false });
}

function showSimilarMode(product) {
  el.withPhotoLabel.hidden = false;
  el.withPhotoText.textContent = "with this piece";
  state.mode = "similar";
  state.similarTo = product;
  el.resultsHeading.textContent = `More like “${product.title}”`;
  el.back.hidden = !state.photo;
}

function showTextMode() {
  state.mode = "text";
  state.similarTo = null;
  el.resultsHeading.textContent = "Pieces matching your words";
  el.back.hidden = !state.photo;
  el.withPhotoLabel.hidden = !state.photo; // the next words may go with the photo again
  el.withPhotoText.textContent = "with my photo";
}

function backToPhotoMode() {
  if (state.mode === "photo") return;
  // the words were a search of their own, or for another product ("the same in rose gold"):
  // not words for the shopper's own photo
  state.query = null;
  el.query.value = "";
  state.mode = "photo";
  state.similarTo = null;
  el.resultsHeading.textContent = "Similar pieces";
  el.back.hidden = true;
  el.withPhotoLabel.hidden = !state.photo;
  el.withPhotoText.textContent = "with my photo";
}

// ---------------------------------------------------------------------------------------------
// The address bar: a search by words or "more like this", with its filters, is a link the
// shopper can share or reload, and Back returns to the search before. A photo stays on the
// shopper's device, so a photo search's address holds only its filters.

const DEFAULT_K = el.k.value;

// Where a search is: a new place is a new history entry; a filter changed in place is not
// (Back should not step through every price typed).
function place() {
  if (state.mode === "similar" && state.similarTo) return `similar:${state.similarTo.id}:${state.query || ""}`;
  if (state.mode === "text") return `text:${state.query || ""}`;
  return "photo";
}

function address() {
  const params = new URLSearchParams();
  if (state.mode === "similar" && state.similarTo) params.set("similar", state.similarTo.id);
  if (state.mode !== "photo" && state.query) params.set("q", state.query);
  for (const [key, value] of filterParams()) {
    if (!(key === "k" && value === DEFAULT_K)) params.set(key, value);
  }
  const query = params.toString();
  return `${window.location.pathname}${query ? `?${query}` : ""}`;
}

// `state.following`: the search an address names is running: that address is rewritten in
// the page's own form (a link's utm_source or k=12 dropped) in its own entry, never pushed
// as a new one, which Back would return from only to push it again.
function remember() {
  const url = address();
  const entry = { place: place(), title: state.similarTo ? state.similarTo.title : null };
  const following = state.following;
  state.following = false;
  if (url === window.location.pathname + window.location.search) {
    window.history.replaceState(entry, "");
  } else if (following ||
             (window.history.state && window.history.state.place === entry.place)) {
    window.history.replaceState(entry, "", url);
  } else {
    window.history.pushState(entry, "", url);
  }
}

// A value the select does not offer (a brand the shop no longer sells) falls back.
function chooseOption(select, value, fallback = "") {
  const known = [...select.options].some((option) => option.value === value);
  select.value = known ? value : fallback;
}

// The search the address names (a shared link, a reload, Back or Forward), run again.
async function followAddress() {
  const params = new URLSearchParams(window.location.search);
  el.minPrice.value = params.get("min_price") || "";
  el.maxPrice.value = params.get("max_price") || "";
  chooseOption(el.brand, params.get("brand") || "");
  chooseOption(el.metal, params.get("metal") || "");
  chooseOption(el.k, params.get("k") || DEFAULT_K, DEFAULT_K);
  const type = params.get("type");
  const known = type === ANY || state.facets.types.includes(type);
  state.type = known ? type : null;
  selectType(known ? type : null, false);
  const words = (params.get("q") || "").trim() || null;
  const similar = params.get("similar");
  state.query = words;
  el.query.value = words || "";
  if (similar) {
    const remembered = window.history.state && window.history.state.title;
    showSimilarMode({ id: similar, title: remembered || await titleOf(similar) });
  } else if (words) {
    showTextMode();
  } else if (state.photo) {
    backToPhotoMode();
  } else { // a photo's search after a reload, or the first page: no photo to search
    backToPhotoMode();
    showWelcome();
    return;
  }
  state.following = true;
  try {
    await search();
  } finally {
    state.following = false; // also when the search stopped before writing the address
  }
}

function showWelcome() {
  if (state.controller) state.controller.abort();
  state.seq += 1; // an answer still on its way is for another page
  setLoading(false);
  el.results.replaceChildren();
  el.empty.hidden = true;
  el.welcome.hidden = false;
  showError("");
  showApplied(null);
  showDoubts(null);
  setStatus("");
}

async function titleOf(productId) {
  try {
    const response = await fetch(`/api/products/${encodeURIComponent(productId)}`);
    if (response.ok) return (await response.json()).title;
  } catch {
    // the search itself says what is wrong
  }
  return "this piece";
}

// ---------------------------------------------------------------------------------------------
// Start

function wireFilters() {
  const soon = debounce(() => search({ typing: true }), 350);
  for (const input of [el.minPrice, el.maxPrice]) {
    input.addEventListener("input", soon);
    input.addEventListener("change", () => { // left, or Enter: now a range upside down is said
      const min = numberOrNull(el.minPrice);
      const max = numberOrNull(el.maxPrice);
      if (min !== null && max !== null && min > max) search();
    });
  }
  for (const select of [el.brand, el.metal, el.k]) select.addEventListener("change", soon);
  el.filters.addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  el.back.addEventListener("click", () => {
    backToPhotoMode();
    el.resultsHeading.focus({ preventScroll: true }); // the button hides itself
    search();
  });
}

// The search box: words alone search the catalog (GET /api/search); with the photo (or the
// product of "more like this") on screen and "with my photo" ticked, they change that search.
function wireSearchBox() {
  el.searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const words = el.query.value.trim();
    const withPicture = (state.photo || state.mode === "similar") && el.withPhoto.checked;
    if (!words) {
      if (state.mode === "text") return;
      state.query = null;
      search();
      return;
    }
    state.query = words;
    // the type chip was chosen for the last search: new words choose their own (the chip
    // silently won over "but a ring" and "gold bracelet")
    state.type = null;
    if (!withPicture) {
      showTextMode();
    } else if (state.mode === "text") { // back to the photo, with these words
      state.mode = "photo";
      el.resultsHeading.textContent = "Similar pieces";
      el.back.hidden = true;
    }
    // typed at the top of a phone's screen: the answer is brought up to it
    search().then(() => { if (el.results.children.length) bringIntoView(el.resultsHeading); });
  });
  el.query.addEventListener("search", () => { // the field's own clear button
    if (!el.query.value && state.query && state.mode !== "text") {
      state.query = null;
      search();
    }
  });
}

wirePhotoInputs();
wireFilters();
wireSearchBox();
loadFacets().then(() => {
  window.addEventListener("popstate", () => followAddress());
  if (window.location.search) followAddress();
});
loadExamples();
