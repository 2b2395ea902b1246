/* jewelrec widget: "similar pieces" on a shop's own product pages.

   <div data-jewelrec-similar="PRODUCT_ID" data-k="8"></div>
   <script src="https://RECOMMENDER/widget.js" defer></script>

   Each such element becomes a strip of the most similar catalog pieces (image, title, price,
   link), asked from the server this script came from (GET /api/products/{id}/similar). That
   server answers the shop's origin only if its operator allowed it (jewelrec serve
   --allow-origin https://shop.example); otherwise the browser withholds the answer and the
   element stays empty. Catalog text is set with textContent, never parsed as HTML; links are
   followed only when they are http(s). No inline styles: the strip uses the classes
   jewelrec-strip, jewelrec-card, jewelrec-title, jewelrec-price, which the shop can style.

   Elements added later (a theme that renders in the browser, a quick-view pop-up, infinite
   scroll) are filled as they appear, and one whose product id changes is filled again;
   window.jewelrec.fill() fills what is there now. A busy server's 503 is retried after its
   Retry-After (twice at most), and a request that takes over 15 s is given up. */
(function () {
  "use strict";

  var script = document.currentScript;
  var scriptUrl = script && script.src ? new URL(script.src, document.baseURI) : null;
  if (!scriptUrl) {
    return;
  }
  var base = scriptUrl.origin;
  var DEFAULT_K = 8;
  var MAX_K = 50;
  var TIMEOUT_MS = 15000;
  var RETRIES = 2; // after a 503: the server's queue is full
  var MAX_WAIT_S = 10; // the longest Retry-After honoured

  function httpLink(text) {
    try {
      var url = new URL(text, base);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (e) {
      return null;
    }
  }

  function formatPrice(price, currency) {
    try {
      return new Intl.NumberFormat(document.documentElement.lang || undefined, {
        style: "currency", currency: currency || "USD"
      }).format(price);
    } catch (e) {
      return String(price) + " " + (currency || "");
    }
  }

  function card(result) {
    var link = httpLink(result.url);
    var item = document.createElement(link ? "a" : "div");
    item.className = "jewelrec-card";
    item.setAttribute("data-id", String(result.id));
    if (link) {
      item.href = link;
      item.target = "_blank";
      item.rel = "noopener noreferrer";
    }
    var image = httpLink(result.image_url);
    if (image) {
      var img = document.createElement("img");
      img.src = image;
      img.alt = String(result.title);
      img.loading = "lazy";
      img.width = 160;
      img.height = 160;
      item.appendChild(img);
    }
    var title = document.createElement("span");
    title.className = "jewelrec-title";
    title.textContent = String(result.title);
    item.appendChild(title);
    var price = document.createElement("span");
    price.className = "jewelrec-price";
    price.textContent = formatPrice(Number(result.price), String(result.currency || ""));
    item.appendChild(price);
    return item;
  }

  function render(element, answer) {
    var strip = document.createElement("div");
    strip.className = "jewelrec-strip";
    strip.setAttribute("role", "list");
    (answer.results || []).forEach(function (result) {
      var item = card(result);
      item.setAttribute("role", "listitem");
      strip.appendChild(item);
    });
    element.replaceChildren(strip);
    element.setAttribute("data-jewelrec-state", "shown");
  }

  function ask(url, triesLeft) {
    var controller = window.AbortController ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, TIMEOUT_MS) : null;
    var options = { mode: "cors", credentials: "omit" };
    if (controller) {
      options.signal = controller.signal;
    }
    return fetch(url, options).then(function (response) {
      clearTimeout(timer);
      if (response.status === 503 && triesLeft > 0) {
        var wait = parseInt(response.headers.get("Retry-After") || "", 10);
        wait = isFinite(wait) && wait >= 0 ? Math.min(wait, MAX_WAIT_S) : 1;
        return later(wait).then(function () { return ask(url, triesLeft - 1); });
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.json();
    }, function (error) {
      clearTimeout(timer);
      if (error && error.name === "AbortError") {
        throw new Error("no answer within " + TIMEOUT_MS / 1000 + " s");
      }
      throw error; // a refused origin looks like a dropped connection: not retried
    });
  }

  function later(seconds) {
    return new Promise(function (resolve) { setTimeout(resolve, seconds * 1000); });
  }

  function fill(element) {
    var id = (element.getAttribute("data-jewelrec-similar") || "").trim();
    if (!id || element.getAttribute("data-jewelrec-state")) {
      return;
    }
    element.setAttribute("data-jewelrec-state", "loading");
    element.setAttribute("data-jewelrec-for", id);
    var k = parseInt(element.getAttribute("data-k") || "", 10);
    k = isFinite(k) && k > 0 ? Math.min(k, MAX_K) : DEFAULT_K;
    var url = base + "/api/products/" + encodeURIComponent(id) + "/similar?k=" + k;
    ask(url, RETRIES)
      .then(function (answer) {
        if (element.getAttribute("data-jewelrec-for") === id) { // not changed meanwhile
          render(element, answer);
        }
      })
      .catch(function (error) {
        if (element.getAttribute("data-jewelrec-for") !== id) {
          return;
        }
        element.setAttribute("data-jewelrec-state", "failed");
        if (window.console) {
          window.console.warn("jewelrec widget: no similar pieces for " + id + ": " + error);
        }
      });
  }

  function fillAll() {
    document.querySelectorAll("[data-jewelrec-similar]").forEach(function (element) {
      var id = (element.getAttribute("data-jewelrec-similar") || "").trim();
      if (element.getAttribute("data-jewelrec-for") !== id) { // a new product in the same slot
        element.removeAttribute("data-jewelrec-state");
      }
      fill(element);
    });
  }

  function watch() {
    if (!window.MutationObserver) {
      return;
    }
    var pending = false;
    new MutationObserver(function () {
      if (!pending) { // one pass for a burst of changes
        pending = true;
        setTimeout(function () { pending = false; fillAll(); }, 0);
      }
    }).observe(document.documentElement, {
      childList: true, subtree: true, attributes: true, attributeFilter: ["data-jewelrec-similar"]
    });
  }

  window.jewelrec = window.jewelrec || {};
  window.jewelrec.fill = fillAll;
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { fillAll(); watch(); });
  } else {
    fillAll();
    watch();
  }
})();
